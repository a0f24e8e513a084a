"""The compiled UDP loop (``dnsd._fastudp``) and the Python one behave the same:
the same reply bytes in the same order (rotation included), the same counts in
the query statistics, for in-zone hits, forwarded hits, misses, errors and
drops, one query at a time and in bursts that arrive as one batch. Real
loopback sockets, a real handler, a forwarder double."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.rrset
import pytest

from dnsd import server
from dnsd.answer import Answerer, ZoneSettings
from dnsd.handler import KEY_LIMIT, Handler
from dnsd.model import Instance, View
from dnsd.server import Tasks, UdpSocket
from dnsd.table import Table
from dnsd.wire import Query

compiled_only = pytest.mark.skipif(server.FASTUDP is None,
                                   reason="dnsd._fastudp is not built (or DNSD_PURE_PYTHON)")


@dataclass
class ForwardStats:
    cache_hits: int = 0


class CachingForwarder:
    """Answers every ``*.fwd.test`` name from its "cache" with one A record;
    other names go "upstream" and come back SERVFAIL-free NXDOMAIN."""

    enabled = True

    def __init__(self) -> None:
        self.stats = ForwardStats()
        self.lookups = 0

    def cached(self, query: Query, over_tcp: bool) -> bytes | None:
        self.lookups += 1
        if not query.text().lower().endswith("fwd.test."):
            return None
        reply = dns.message.make_response(dns.message.from_wire(query.wire))
        reply.answer.append(dns.rrset.from_text(query.text(), 300, "IN", "A", "192.0.2.7"))
        return reply.to_wire()

    async def forward(self, query: Query, over_tcp: bool) -> bytes:
        await asyncio.sleep(0)
        reply = dns.message.make_response(dns.message.from_wire(query.wire))
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply.to_wire()


def make_table() -> Table:
    table = Table()
    table.publish("t", View((
        *(Instance("web", f"n{i}", "dc1", address=f"10.1.0.{i + 1}", port=80) for i in range(3)),
        Instance("solo", "n9", "dc1", address="10.2.0.1", port=81),
        *(Instance("big", f"b{i}", "dc1", address=f"10.3.{i // 250}.{i % 250 + 1}", port=82)
          for i in range(80)),
    )))
    return table


def make_handler(allow: str = "127.0.0.0/8", timed: bool = False, table: Table | None = None
                 ) -> tuple[Handler, CachingForwarder]:
    table = table if table is not None else make_table()
    forwarder = CachingForwarder()
    return Handler(table, Answerer(ZoneSettings()), forwarder,
                   [ipaddress.ip_network(allow)], timed=timed), forwarder


def wire(name: str, qtype: str = "A", ident: int = 0, **kwargs: Any) -> bytes:
    message = dns.message.make_query(name, qtype, **kwargs)
    message.id = ident
    return message.to_wire()


def script() -> Iterator[bytes]:
    """Every kind of datagram, each asked often enough to be a cache hit."""
    for n in range(12):
        yield wire("web.service.consul", ident=n)  # 3 rotations
        yield wire("WEB.service.CONSUL", ident=100 + n)  # another spelling, the same counter
        yield wire("web.service.consul", "SRV", ident=200 + n, use_edns=0, payload=1232)
        yield wire("solo.service.consul", ident=300 + n)  # one rotation
        yield wire("nothing.service.consul", ident=400 + n)  # NXDOMAIN
        yield wire("big.service.consul", "SRV", ident=500 + n)  # more than the rotations kept
        yield wire(f"host{n % 3}.fwd.test", ident=600 + n)  # forwarded, from the cache
        yield wire("elsewhere.example", ident=700 + n)  # forwarded, upstream
        yield wire("web.service.consul", "AXFR", ident=800 + n)  # REFUSED
        yield b"\x12\x34" + b"\x00" * 10  # no question: FORMERR
        yield b"\x00"  # too short: dropped
        yield wire("web.service.consul", ident=900 + n)[:-3]  # cut: FORMERR
        yield wire("web.service.consul", ident=1000 + n) + b"\x00" * KEY_LIMIT  # not cached


def _pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    return sock, client


async def _exchange(client: socket.socket, to: Any, packets: list[bytes],
                    expected: int) -> list[bytes]:
    for packet in packets:
        client.sendto(packet, to)
    replies = []
    for _ in range(expected):
        reply, source = await asyncio.to_thread(client.recvfrom, 65535)
        assert source[:2] == to[:2]  # from the address asked (a wildcard listener)
        replies.append(reply)
    return replies


def _expected_replies(packets: list[bytes]) -> int:
    return sum(len(p) >= 12 for p in packets)


@dataclass
class Outcome:
    replies: list[bytes]
    counts: dict[Any, int]
    dropped: int
    observed: int  # latency observations
    served: int  # replies the compiled loop answered itself


async def run(compiled: bool, burst: int, table: Table, *, timed: bool = False,
              wildcard: bool = False, small_cache: bool = False) -> Outcome:
    handler, _ = make_handler(timed=timed, table=table)
    if small_cache:  # a few replies per generation: hits in the old one, turnovers
        handler._replies[0].max_bytes = handler._forwarded[0].max_bytes = 6000
    sock, client = _pair("0.0.0.0" if wildcard else "127.0.0.1")
    to = ("127.0.0.2" if wildcard else "127.0.0.1", sock.getsockname()[1])
    tasks = Tasks()
    endpoint = UdpSocket(sock, handler.handle, tasks, caches=handler.udp_caches,
                         compiled=compiled, pktinfo=wildcard)
    assert endpoint.compiled is compiled
    try:
        packets = list(script())
        replies: list[bytes] = []
        for start in range(0, len(packets), burst):
            chunk = packets[start:start + burst]
            replies.extend(await _exchange(client, to, chunk, _expected_replies(chunk)))
        await tasks.drain(1)
        handler.flush_stats()
        stats = handler.stats
        return Outcome(replies, dict(stats.replies), stats.dropped, sum(stats.latency_counts),
                       endpoint.reader.served if endpoint.reader is not None else 0)
    finally:
        endpoint.close()
        client.close()


def _by_id(replies: list[bytes]) -> list[bytes]:
    # Forwarded-upstream replies come back when their task runs: order by ID.
    return sorted(replies, key=lambda r: (r[:2], r))


@compiled_only
@pytest.mark.parametrize("burst", [1, 13])
@pytest.mark.parametrize("variant", ["plain", "timed", "wildcard", "small-cache"])
async def test_compiled_loop_answers_as_the_python_loop(burst: int, variant: str) -> None:
    timed = variant == "timed"
    options = {"timed": timed, "wildcard": variant == "wildcard",
               "small_cache": variant == "small-cache"}
    table = make_table()  # one table: the SOA serial is the time it was built
    python = await run(False, burst, table, **options)
    compiled = await run(True, burst, table, **options)
    assert _by_id(compiled.replies) == _by_id(python.replies)
    assert compiled.counts == python.counts
    assert compiled.dropped == python.dropped
    # Timed: every datagram's latency observed once, wherever it was answered.
    assert compiled.observed == python.observed == (len(list(script())) if timed else 0)
    assert compiled.served > 0  # the cache hits really were answered in C


@compiled_only
async def test_rotation_counter_is_shared_between_spellings_in_c() -> None:
    """Each record leads in turn across two spellings of one question, as the
    handler's hot path rotates them."""
    handler, _ = make_handler()
    sock, client = _pair()
    endpoint = UdpSocket(sock, handler.handle, Tasks(), caches=handler.udp_caches,
                         compiled=True)
    try:
        firsts = []
        for n in range(12):
            name = "web.service.consul" if n % 2 else "Web.Service.Consul"
            (reply,) = await _exchange(client, sock.getsockname(), [wire(name, ident=n)], 1)
            answer = dns.message.from_wire(reply)
            assert answer.id == n
            firsts.append(str(next(iter(answer.answer[0]))))
        assert endpoint.reader is not None and endpoint.reader.served >= 8
        assert {firsts.count(a) for a in set(firsts)} == {4}  # three records, four times each
        assert all(a != b for a, b in itertools.pairwise(firsts))
    finally:
        endpoint.close()
        client.close()


@compiled_only
async def test_forwarded_hits_need_the_clients_permission() -> None:
    """A client not allowed recursion is REFUSED even when another client's
    forwarded answer is cached under the same bytes."""
    handler, _ = make_handler(allow="127.0.0.1/32")
    sock, client = _pair()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    other.settimeout(5)
    endpoint = UdpSocket(sock, handler.handle, Tasks(), caches=handler.udp_caches,
                         compiled=True)
    try:
        query = wire("host1.fwd.test", ident=9)
        for _ in range(3):
            (reply,) = await _exchange(client, sock.getsockname(), [query], 1)
            assert dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
        (refused,) = await _exchange(other, sock.getsockname(), [query], 1)
        assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    finally:
        endpoint.close()
        client.close()
        other.close()


@compiled_only
async def test_a_new_table_version_is_seen_by_the_compiled_loop() -> None:
    handler, _ = make_handler()
    sock, client = _pair()
    endpoint = UdpSocket(sock, handler.handle, Tasks(), caches=handler.udp_caches,
                         compiled=True)
    try:
        query = wire("solo.service.consul", ident=1)
        for _ in range(3):
            (reply,) = await _exchange(client, sock.getsockname(), [query], 1)
            assert "10.2.0.1" in dns.message.from_wire(reply).to_text()
        handler.table.publish("t", View((
            Instance("solo", "n9", "dc1", address="10.2.0.2", port=81),)))
        (reply,) = await _exchange(client, sock.getsockname(), [query], 1)
        assert "10.2.0.2" in dns.message.from_wire(reply).to_text()
    finally:
        endpoint.close()
        client.close()


@compiled_only
async def test_the_compiled_loop_reads_ipv6_addresses_as_the_socket_module_does() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.bind(("::1", 0))
    except OSError:
        sock.close()
        pytest.skip("no ::1")
    sock.setblocking(False)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind(("::1", 0))
    client.settimeout(5)
    seen: list[tuple[str, int]] = []

    def handle(data: bytes, peer: str, tcp: bool, port: int = 0) -> bytes:
        seen.append((peer, port))
        return b"re:" + data

    endpoint = UdpSocket(sock, handle, Tasks(), compiled=True)
    try:
        (reply,) = await _exchange(client, sock.getsockname(), [b"hello"], 1)
        assert reply == b"re:hello"
        assert seen == [("::1", client.getsockname()[1])]
    finally:
        endpoint.close()
        client.close()


def test_compiled_loop_can_be_required_only_where_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "FASTUDP", None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(RuntimeError, match="_fastudp"):
            asyncio.run(_make(sock, True))
        endpoint = asyncio.run(_make(sock, None))
        assert not endpoint.compiled
    finally:
        sock.close()


async def _make(sock: socket.socket, compiled: bool | None) -> UdpSocket:
    endpoint = UdpSocket(sock, lambda *a: None, Tasks(), compiled=compiled)
    endpoint.stop_reading()
    return endpoint
