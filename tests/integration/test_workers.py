"""--workers: several processes share the port; the supervisor keeps them running."""

from __future__ import annotations

import os
import signal
import subprocess

import dns.rcode

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess, wait_until


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_share_the_port_and_stop_together() -> None:
    proc = DnsdProcess(["--static", str(SERVICES), "--workers", "2"])
    try:
        wait_until(lambda: len(proc.listening) >= 2)  # one line per worker, same port
        assert len({port for _, port in proc.listening}) == 1
        assert len(_children(proc.proc.pid)) == 2
        for _ in range(20):  # new source ports spread queries over both workers
            assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR
            assert proc.query("web.service.consul", "SRV", tcp=True).rcode() == 0

        # a worker that dies is replaced
        victim = _children(proc.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(kids := _children(proc.proc.pid)) == 2 and victim not in kids)
        proc.wait_for_log("restarting it")
        wait_until(lambda: len(proc.listening) >= 3)  # the new worker serves too
        for _ in range(10):
            assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        proc.stop()
    assert proc.log.count("shutting down") >= 2
