"""systemd's readiness protocol against a real datagram socket."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from dnsd.sdnotify import notify


def test_sends_to_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(64) == b"READY=1"


def test_sends_to_an_abstract_socket() -> None:
    name = f"dnsd-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"STOPPING=1"


def test_nothing_without_systemd_and_no_error_when_it_is_gone(tmp_path: Path,
                                                              caplog) -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert "cannot tell systemd READY=1" in caplog.text
