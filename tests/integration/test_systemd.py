"""What the systemd unit relies on: readiness (``Type=notify``) once dnsd
answers, and ``--freebind`` so a host without Docker's bridge (yet) does not
make dnsd fail and restart in a loop."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import dns.rcode
import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess
from tests.netns import Netns, unavailable_reason

NO_NS = unavailable_reason()


def test_ready_once_answering_and_stopping_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(15)
        proc = DnsdProcess(["--static", str(SERVICES)], env={"NOTIFY_SOCKET": str(path)},
                           wait=False)
        try:
            assert sock.recv(64) == b"READY=1"
            # Ready means answering: the listeners are bound before the message.
            proc.wait_listening()
            reply = proc.query("web.service.consul")
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer
            assert proc.stop() == 0
            assert sock.recv(64) == b"STOPPING=1"
        finally:
            proc.stop()


@pytest.mark.skipif(NO_NS is not None, reason=f"FREEBIND NOT RUN: {NO_NS}")
def test_freebind_listens_on_a_bridge_address_before_it_exists() -> None:
    """As the unit runs on a host where docker0 is not there (yet): without
    --freebind dnsd cannot start; with it, it answers once the address appears."""
    bridge = "10.213.255.1"
    with Netns() as ns:
        refused = subprocess.run(
            ns.argv([sys.executable, "-m", "dnsd", "--listen", f"{bridge}:53",
                     "--static", str(SERVICES)]),
            capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[2])
        assert refused.returncode == 2
        assert f"--listen {bridge}:53: cannot listen" in refused.stderr
        dnsd = ns.dnsd(["--listen", "127.0.0.1:53", "--listen", f"{bridge}:53",
                        "--freebind", "--static", str(SERVICES)])
        assert dnsd.listening == [("127.0.0.1", 53), (bridge, 53)]
        # The bridge comes up (Docker starting): here, the address on loopback.
        added = ns.run(["ip", "addr", "add", f"{bridge}/32", "dev", "lo"])
        assert added.returncode == 0, added.stderr
        result = ns.run(["dig", f"@{bridge}", "+short", "+time=2", "web.service.consul"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert set(result.stdout.split()) == {"10.1.0.11", "10.1.0.12", "10.1.0.13"}
