"""The protocol classes on fake transports: framing, pipelining, limits, backpressure."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable
from typing import Any

import pytest

from dnsd import server as server_module
from dnsd.handler import Reply
from dnsd.server import Tasks, TcpLimits, TcpProtocol, UdpSocket


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int] = ("192.0.2.1", 5353)) -> None:
        super().__init__()
        self.peer = peer
        self.written: list[bytes] = []
        self.sent: list[tuple[bytes, Any]] = []
        self.closed = False
        self.aborted = False
        self.paused = False
        self.limits: dict[str, int] = {}
        self.buffered = 0  # bytes the "kernel" has not taken yet

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = {"high": high or 0}


def frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        (size,) = struct.unpack_from("!H", data)
        out.append(data[2:2 + size])
        data = data[2 + size:]
    return out


def echo(wire: bytes, client: str, tcp: bool, port: int = 0) -> Reply:
    return b"R" + wire


async def test_tcp_frames_split_and_joined_arbitrarily() -> None:
    proto = TcpProtocol(echo, Tasks(), TcpLimits())
    transport = FakeTransport()
    proto.connection_made(transport)
    stream = b"".join(struct.pack("!H", len(m)) + m for m in (b"one", b"two", b"three"))
    for i in range(len(stream)):  # one byte at a time
        proto.data_received(stream[i:i + 1])
    assert frames(b"".join(transport.written)) == [b"Rone", b"Rtwo", b"Rthree"]
    proto.connection_lost(None)


async def test_tcp_async_replies_in_completion_order_and_in_flight_cap() -> None:
    gates: dict[bytes, asyncio.Event] = {}

    def slow(wire: bytes, client: str, tcp: bool, port: int = 0) -> Reply | Awaitable[Reply]:
        gates[wire] = asyncio.Event()

        async def later() -> Reply:
            await gates[wire].wait()
            return b"R" + wire
        return later()

    tasks = Tasks()
    proto = TcpProtocol(slow, tasks, TcpLimits(max_in_flight=2))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"".join(struct.pack("!H", 1) + bytes([c]) for c in b"abc"))
    assert set(gates) == {b"a", b"b"} and transport.paused  # the cap stops reading
    gates[b"b"].set()
    await asyncio.sleep(0.01)
    assert frames(b"".join(transport.written)) == [b"Rb"]  # answered out of order
    assert b"c" in gates  # reading resumed and the queued query was taken
    gates[b"a"].set()
    gates[b"c"].set()
    await tasks.drain(1)
    assert frames(b"".join(transport.written)) == [b"Rb", b"Ra", b"Rc"]


async def test_tcp_connection_cap_and_idle_timeout() -> None:
    limits = TcpLimits(max_connections=1, idle_timeout=0.05)
    first, second = TcpProtocol(echo, Tasks(), limits), TcpProtocol(echo, Tasks(), limits)
    t1, t2 = FakeTransport(), FakeTransport()
    first.connection_made(t1)
    second.connection_made(t2)
    assert t2.aborted and not t1.aborted
    await asyncio.sleep(0.1)
    assert t1.closed  # idle
    first.connection_lost(None)
    second.connection_lost(None)
    assert limits.open == 0


async def test_idle_connection_whose_client_does_not_read_is_aborted() -> None:
    """close() would wait to flush replies the client never reads: abort."""
    limits = TcpLimits(idle_timeout=0.05)
    proto = TcpProtocol(echo, Tasks(), limits)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(struct.pack("!H", 1) + b"x")
    transport.buffered = 300_000
    proto.pause_writing()
    await asyncio.sleep(0.1)
    assert transport.aborted and not transport.closed
    proto.connection_lost(None)
    assert limits.open == 0


async def test_per_client_connection_cap() -> None:
    limits = TcpLimits(max_connections=100, per_client=2)
    protos = [TcpProtocol(echo, Tasks(), limits) for _ in range(4)]
    transports = [FakeTransport(("192.0.2.1", 1000 + n)) for n in range(3)]
    transports.append(FakeTransport(("192.0.2.2", 1000)))
    for proto, transport in zip(protos, transports, strict=True):
        proto.connection_made(transport)
    assert [t.aborted for t in transports] == [False, False, True, False]
    protos[0].connection_lost(None)
    again = TcpProtocol(echo, Tasks(), limits)
    again.connection_made(FakeTransport(("192.0.2.1", 2000)))  # a slot is free again
    assert limits.by_client == {"192.0.2.1": 2, "192.0.2.2": 1} and limits.open == 3


@pytest.mark.parametrize(("soft", "hard", "cap", "raised"), [
    (1024, 1024, 1024 - 256, 1024),   # the hard limit stops it: fewer connections
    (1024, 4096, 1024, 1024 + 256),   # the soft limit is raised to fit
])
def test_connection_cap_leaves_descriptors_for_the_rest(soft: int, hard: int, cap: int,
                                                        raised: int) -> None:
    # In a child process: lowering a hard limit cannot be undone without root.
    code = ("import resource; from dnsd.server import connection_cap; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
            "print(connection_cap(1024), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(cap), str(raised)]


async def test_tcp_client_that_does_not_read_is_not_read_either() -> None:
    proto = TcpProtocol(echo, Tasks(), TcpLimits())
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.pause_writing()
    assert transport.paused
    proto.data_received(struct.pack("!H", 1) + b"x")
    assert transport.written == []  # held until the client reads
    proto.resume_writing()
    assert not transport.paused and frames(b"".join(transport.written)) == [b"Rx"]


async def test_tcp_oversized_buffer_is_aborted() -> None:
    proto = TcpProtocol(echo, Tasks(), TcpLimits(max_buffered=10))
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.pause_writing()
    proto.data_received(b"\xff\xff" + b"x" * 70000)
    assert transport.aborted


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    return server, client


# Each UDP test runs on both loops: the Python one and the compiled one (when built).
LOOPS = pytest.mark.parametrize("compiled", [
    False, pytest.param(True, marks=pytest.mark.skipif(
        server_module.FASTUDP is None, reason="dnsd._fastudp is not built"))],
    ids=["python", "compiled"])


@LOOPS
@pytest.mark.parametrize("reply", [b"answer", None])
async def test_udp_sends_sync_replies_and_skips_drops(reply: bytes | None,
                                                      compiled: bool) -> None:
    server, client = _udp_pair()
    seen: list[tuple[bytes, str]] = []

    def handle(wire: bytes, peer: str, tcp: bool, port: int = 0) -> Reply:
        seen.append((wire, peer))
        return reply

    endpoint = UdpSocket(server, handle, Tasks(), compiled=compiled)
    try:
        client.sendto(b"query", server.getsockname())
        if reply is None:
            client.settimeout(0.2)
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(client.recv, 100)
        else:
            assert await asyncio.to_thread(client.recv, 100) == reply
        assert seen == [(b"query", "127.0.0.1")]
    finally:
        endpoint.close()
        client.close()


@LOOPS
async def test_udp_sends_async_replies_later(compiled: bool) -> None:
    server, client = _udp_pair()

    async def later() -> Reply:
        await asyncio.sleep(0.01)
        return b"late"

    tasks = Tasks()
    endpoint = UdpSocket(server, lambda w, c, t, p: later(), tasks, compiled=compiled)
    try:
        client.sendto(b"q", server.getsockname())
        assert await asyncio.to_thread(client.recv, 100) == b"late"
    finally:
        await tasks.drain(1)
        endpoint.close()
        client.close()


async def test_tcp_trickling_bytes_do_not_keep_a_connection_open() -> None:
    """Slowloris: a byte at a time is not activity; only whole queries are."""
    proto = TcpProtocol(echo, Tasks(), TcpLimits(idle_timeout=0.1))
    transport = FakeTransport()
    proto.connection_made(transport)
    query = struct.pack("!H", 40) + b"q" * 40
    for byte in query[:10]:
        proto.data_received(bytes([byte]))
        await asyncio.sleep(0.03)
    assert transport.closed
    proto.connection_lost(None)


async def test_tcp_whole_queries_keep_a_connection_open() -> None:
    proto = TcpProtocol(echo, Tasks(), TcpLimits(idle_timeout=0.1))
    transport = FakeTransport()
    proto.connection_made(transport)
    for _ in range(6):
        proto.data_received(struct.pack("!H", 1) + b"q")
        await asyncio.sleep(0.04)
    assert not transport.closed and len(frames(b"".join(transport.written))) == 6
    proto.connection_lost(None)
