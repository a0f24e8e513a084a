"""--workers: several processes share the port; the supervisor keeps them running."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import dns.rcode

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_share_the_port_and_stop_together() -> None:
    proc = DnsdProcess(["--static", str(SERVICES), "--workers", "2"])
    try:
        proc.wait_for_log("listening on.*\n?", timeout=5)
        deadline = time.monotonic() + 5
        while len(proc.listening) < 2:  # one line per worker, same port
            assert time.monotonic() < deadline, proc.log
            time.sleep(0.05)
        assert len({port for _, port in proc.listening}) == 1
        assert len(_children(proc.proc.pid)) == 2
        for _ in range(20):  # new source ports spread queries over both workers
            assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR
            assert proc.query("web.service.consul", "SRV", tcp=True).rcode() == 0

        # a worker that dies is replaced
        victim = _children(proc.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            kids = _children(proc.proc.pid)
            if len(kids) == 2 and victim not in kids:
                break
            assert time.monotonic() < deadline, proc.log
            time.sleep(0.1)
        proc.wait_for_log("restarting it")
        for _ in range(10):
            assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
        proc.stop()
    assert proc.log.count("shutting down") >= 2
