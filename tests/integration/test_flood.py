"""Floods: garbage interleaved with valid queries, and slow TCP clients.

The default variants are short enough for ``make test``; the million-packet
flood is marked slow and run by hand: ``pytest -m slow tests/integration/test_flood.py``.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time

import dns.message
import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess, wait_until


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _flood(proc: DnsdProcess, packets: int) -> tuple[int, int]:
    """Send garbage with a valid query every 100 packets; count valid replies."""
    rng = random.Random(1)
    valid = dns.message.make_query("web.service.consul", "A")
    garbage = [rng.randbytes(rng.randrange(0, 300)) for _ in range(512)]
    # mutated queries too: real headers with broken bodies
    garbage += [valid.to_wire()[:rng.randrange(12, 30)] for _ in range(64)]
    sent = answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        sock.setblocking(False)
        probe.settimeout(1.0)
        for i in range(packets):
            try:
                sock.sendto(garbage[i % len(garbage)], (proc.host, proc.port))
            except BlockingIOError:
                time.sleep(0.0005)
            if i % 100 == 0:
                valid.id = rng.randrange(65536)
                probe.sendto(valid.to_wire(), (proc.host, proc.port))
                sent += 1
                try:
                    while True:
                        reply = dns.message.from_wire(probe.recv(4096))
                        if reply.id == valid.id:
                            answered += 1
                            break
                except (TimeoutError, dns.exception.DNSException):
                    pass
    return sent, answered


def _run_flood(packets: int, min_fraction: float) -> None:
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        before = _rss_kb(proc.proc.pid)
        sent, answered = _flood(proc, packets)
        after = _rss_kb(proc.proc.pid)
        print(f"flood: {packets} packets, {answered}/{sent} valid queries answered, "
              f"RSS {before} -> {after} kB")
        assert answered / sent >= min_fraction
        assert after - before < 50_000  # bounded: no per-packet state kept
        assert len(proc.query("web.service.consul", "A").answer[0]) == 3


def test_flood_of_garbage_keeps_valid_queries_answered() -> None:
    _run_flood(50_000, 0.95)


@pytest.mark.slow
def test_million_packet_flood() -> None:
    _run_flood(1_000_000, 0.95)


def test_slow_tcp_clients_cannot_take_the_server() -> None:
    """Slowloris: connections that trickle one byte a second hold nothing hostage."""
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        slow = []
        for _ in range(50):
            sock = socket.create_connection((proc.host, proc.port), timeout=2)
            sock.sendall(b"\x00")  # half a length prefix
            slow.append(sock)
        for _ in range(3):
            time.sleep(0.2)
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"\x00")  # a byte at a time
            reply = proc.query("web.service.consul", "A", tcp=True)
            assert len(reply.answer[0]) == 3
            assert len(proc.query("web.service.consul", "A").answer[0]) == 3
        for sock in slow:
            sock.close()


def test_client_that_never_reads_does_not_grow_memory() -> None:
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        query = dns.message.make_query("web.service.consul", "SRV").to_wire()
        frame = struct.pack("!H", len(query)) + query
        sock = socket.create_connection((proc.host, proc.port), timeout=2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        before = _rss_kb(proc.proc.pid)
        pushed = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and pushed < 20_000_000:
            try:
                pushed += sock.send(frame * 200)
            except BlockingIOError:
                time.sleep(0.01)  # the server stopped reading us: backpressure works
        after = _rss_kb(proc.proc.pid)
        assert after - before < 30_000, (before, after, pushed)
        assert len(proc.query("web.service.consul", "A", tcp=True).answer[0]) == 3
        sock.close()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_padded_queries_do_not_grow_memory() -> None:
    """Queries padded with 60 KB of trailing bytes, each sent twice over one TCP
    connection: their bytes must not become cache keys (they used to: about
    120 KB kept per query, 2.5 GB from one client in 17 s)."""
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        base = dns.message.make_query("web.service.consul", "A").to_wire()
        sock = socket.create_connection((proc.host, proc.port), timeout=10)
        before = _rss_kb(proc.proc.pid)
        for n in range(600):
            wire = base + n.to_bytes(2, "big") * 30_000
            for _ in range(2):
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
                reply = dns.message.from_wire(_recv_exactly(sock, length))
                assert len(reply.answer[0]) == 3
        after = _rss_kb(proc.proc.pid)
        sock.close()
        print(f"RSS before {before} kB, after 1,200 padded queries {after} kB")
        assert after - before < 30_000, (before, after)


def _reset(sock: socket.socket) -> bool:
    """True once the server has dropped this connection."""
    try:
        sock.send(b"\x00")
    except OSError:
        return True
    return False


def test_connections_that_never_read_are_dropped_after_the_idle_timeout() -> None:
    """Clients that pipeline queries and never read their replies: once idle
    (they cannot send more: the server stopped reading them), the server drops
    them rather than waiting forever to flush (they used to stay open)."""
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        query = dns.message.make_query("web.service.consul", "SRV").to_wire()
        frame = struct.pack("!H", len(query)) + query
        socks = []
        for _ in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((proc.host, proc.port))
            sock.setblocking(False)
            socks.append(sock)
        for sock in socks:  # fill both directions until the server stops reading
            with contextlib.suppress(BlockingIOError):
                for _ in range(10_000):
                    sock.send(frame * 50)
        took = wait_until(lambda: all(_reset(s) for s in socks), timeout=60, interval=0.2)
        print(f"20 non-reading connections dropped {took:.1f} s after they stalled")
        assert len(proc.query("web.service.consul", "A", tcp=True).answer[0]) == 3
        for sock in socks:
            sock.close()


def test_one_client_cannot_take_every_tcp_slot() -> None:
    with DnsdProcess(["--static", str(SERVICES)]) as proc:
        held = []
        for _ in range(200):
            held.append(socket.create_connection((proc.host, proc.port), timeout=5))
        wait_until(lambda: sum(_reset(s) for s in held) >= 100, interval=0.1)
        # Another client (127.0.0.2 is loopback too) still gets in.
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        other.bind(("127.0.0.2", 0))
        other.settimeout(5)
        other.connect((proc.host, proc.port))
        query = dns.message.make_query("web.service.consul", "A").to_wire()
        other.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", _recv_exactly(other, 2))
        assert len(dns.message.from_wire(_recv_exactly(other, length)).answer[0]) == 3
        other.close()
        for sock in held:
            sock.close()
