"""Talking to one upstream resolver: building the upstream query, the UDP and TCP
exchanges, the rules a reply must pass to be accepted, and reading the reply
into record boundaries and TTLs (the cache and the renderer work on those).

An upstream reply is accepted only when it comes from the address we sent to,
has QR set, our random ID, exactly one question, and that question equals ours
case-insensitively (RFC 5452 9.1). Anything else is ignored and the wait goes on,
so a spoofed or stray datagram costs nothing but a glance.

An accepted reply's answer section is then kept to what answers the question
(:func:`in_bailiwick`, RFC 5452 6): records about other names are not passed
on to clients nor cached.

Reading is hand-written and bounds-checked (like ``wire``): only the record
headers are needed, and a reply that does not parse is treated as no reply.
Imports: ``hostport``, ``records`` (type numbers), ``wire``, dnslib (rebuilding a
reply that lost records) and the stdlib.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass

from dnslib import DNSRecord

from dnsd.hostport import HostPort
from dnsd.records import QNAME_POINTER, T_CNAME, T_DNAME, T_RRSIG, T_SOA
from dnsd.wire import (
    CD,
    HEADER,
    MAX_UDP,
    OPTION_FORWARDED_BY,
    QR,
    RD,
    TC,
    TYPE_OPT,
    Malformed,
    name_suffixes,
    read_name,
    skip_name,
)

ANSWER, AUTHORITY, ADDITIONAL = 1, 2, 3


class ExchangeError(Exception):
    """One try with one upstream produced no acceptable reply (timeout, refused
    connection, closed stream). Never leaves the forwarder."""


@dataclass(frozen=True, slots=True)
class Record:
    """Where one resource record sits in a reply, and what the cache needs of it."""

    section: int        # ANSWER, AUTHORITY or ADDITIONAL
    start: int          # offset of the owner name in the reply
    end: int            # offset just past the rdata
    ttl_at: int         # offset of the 4-byte TTL
    rtype: int
    ttl: int
    soa_minimum: int | None  # the SOA MINIMUM field (RFC 2308 4) when rtype is SOA


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream reply, read far enough to cache and re-render it.

    ``records`` excludes the OPT record, and every record after a misplaced OPT
    (their names might point into it). The records keep their offsets in
    ``wire``, which is valid because the re-rendered reply keeps the header and a
    question of the same length in front of them, so compression pointers
    (which point backwards, RFC 1035 4.1.4) still land on the same bytes.
    """

    wire: bytes
    flags: int
    question_end: int
    records: tuple[Record, ...]
    # how many of ``records`` are answer, authority and additional records, in
    # that order (read once here so that rendering need not count them)
    counts: tuple[int, int, int] = (0, 0, 0)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)


def read_reply(wire: bytes) -> Reply:
    """Read an upstream reply's header, question and record headers.

    Raises :class:`Malformed` when the reply is not one question followed by
    the counted records (a reply we cannot read is a failed try).
    """
    if len(wire) < 12:
        raise Malformed("shorter than a header")
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(wire)
    if qdcount != 1:
        raise Malformed(f"qdcount is {qdcount}, not 1")
    pos = skip_name(wire, 12) + 4
    if pos > len(wire):
        raise Malformed("question cut short")
    question_end = pos
    records: list[Record] = []
    end = len(wire)
    counts = ((ANSWER, ancount), (AUTHORITY, nscount), (ADDITIONAL, arcount))
    opt_seen = False
    truncated = bool(flags & TC)
    for section, count in counts:
        for _ in range(count):
            start = pos
            try:
                pos = skip_name(wire, pos)
                if pos + 10 > end:
                    raise Malformed("record header cut short")
                rtype, _rclass, ttl, rdlength = struct.unpack_from("!HHIH", wire, pos)
                ttl_at = pos + 4
                pos += 10 + rdlength
                if pos > end:
                    raise Malformed("record data cut short")
            except Malformed:
                # A truncated UDP reply may end mid-record (RFC 2181 9): keep
                # what is whole; it is only used to decide on the TCP retry.
                if truncated:
                    return _reply(wire, flags, question_end, records)
                raise
            if rtype == TYPE_OPT:
                opt_seen = True
                continue
            if opt_seen:
                continue  # see the class docstring: never move a record
            soa_minimum = None
            if rtype == T_SOA:
                if rdlength < 22:
                    raise Malformed("SOA record too short")
                (soa_minimum,) = struct.unpack_from("!I", wire, pos - 4)
            if ttl & 0x80000000:
                ttl = 0  # RFC 2181 8: a TTL with the top bit set is treated as zero
            records.append(Record(section, start, pos, ttl_at, rtype, ttl, soa_minimum))
    return _reply(wire, flags, question_end, records)


def _reply(wire: bytes, flags: int, question_end: int, records: list[Record]) -> Reply:
    counts = [0, 0, 0, 0]
    for rec in records:
        counts[rec.section] += 1
    return Reply(wire, flags, question_end, tuple(records), (counts[1], counts[2], counts[3]))


def in_bailiwick(reply: Reply, qname: bytes) -> Reply:
    """``reply`` with its answer section kept to what answers ``qname`` (a
    lower-cased wire name): records owned by the name, by each name its CNAMEs
    lead to (in any order), and a DNAME (with its RRSIG) owned by a parent of
    one of those (RFC 6672). Anything else there, an address for some other
    name, is what a poisoning upstream adds (RFC 5452 6) and is dropped. The
    authority and additional sections are left as they are (the zone's SOA or
    NS, glue, DNSSEC proofs): dnsd never answers another question from them.

    The same ``reply`` when nothing is dropped, which is the usual case and
    costs only reading the owners that are not the question's. Otherwise a new
    reply, re-encoded (the records after a dropped one would move, and may
    point into it). Raises Malformed when a name cannot be read.
    """
    wire = reply.wire
    answers = [rec for rec in reply.records if rec.section == ANSWER]
    owners = [qname if wire[rec.start:rec.start + 2] == QNAME_POINTER
              else read_name(wire, rec.start).lower() for rec in answers]
    if all(owner == qname for owner in owners):
        return reply
    chain = {qname}
    grew = True
    while grew:  # a CNAME chain may come in any order
        grew = False
        for rec, owner in zip(answers, owners, strict=True):
            if rec.rtype == T_CNAME and owner in chain:
                target = read_name(wire, rec.ttl_at + 6).lower()
                if target not in chain:
                    chain.add(target)
                    grew = True
    parents = {parent for name in chain for parent in list(name_suffixes(name))[1:]}
    if all(_on_chain(owner, rec.rtype, _signs(wire, rec), chain, parents)
           for rec, owner in zip(answers, owners, strict=True)):
        return reply
    try:
        parsed = DNSRecord.parse(wire)
        parsed.rr = [rr for rr in parsed.rr
                     if _on_chain(_label_name(rr.rname.label), rr.rtype,
                                  getattr(rr.rdata, "covered", None), chain, parents)]
        rebuilt = bytes(parsed.pack())
    except Exception:  # dnslib raises several kinds on input it cannot take
        raise Malformed("reply cannot be re-encoded") from None
    return read_reply(rebuilt)


def _on_chain(owner: bytes, rtype: int, signs: int | None, chain: set[bytes],
              parents: set[bytes]) -> bool:
    """Whether an answer record of ``owner`` and ``rtype`` answers the question
    (``signs``: the type an RRSIG covers)."""
    if owner in chain:
        return True
    return owner in parents and (rtype == T_DNAME or (rtype == T_RRSIG and signs == T_DNAME))


def _signs(wire: bytes, rec: Record) -> int | None:
    """The type an RRSIG record covers (its first RDATA field), else None."""
    if rec.rtype != T_RRSIG or rec.ttl_at + 8 > rec.end:
        return None
    covered: int = struct.unpack_from("!H", wire, rec.ttl_at + 6)[0]
    return covered


def _label_name(labels: tuple[bytes, ...]) -> bytes:
    """dnslib's labels as a lower-cased wire name."""
    return b"".join(bytes([len(label)]) + label for label in labels).lower() + b"\x00"


def build_query(ident: int, question: bytes, *, do: bool, cd: bool, edns: bool = True,
                marks: bytes = b"") -> bytes:
    """The query we send upstream: RD set (we want recursion done for us), the
    client's CD bit, and an OPT advertising ``MAX_UDP`` with the client's DO
    and, when there are ``marks``, the forwarded-by option carrying them."""
    flags = RD | (CD if cd else 0)
    header = HEADER.pack(ident, flags, 1, 0, 0, 1 if edns else 0)
    if not edns:
        return header + question
    rdata = struct.pack("!HH", OPTION_FORWARDED_BY, len(marks)) + marks if marks else b""
    opt = b"\x00" + struct.pack("!HHIH", TYPE_OPT, MAX_UDP, 0x8000 if do else 0,
                                len(rdata)) + rdata
    return header + question + opt


def acceptable(reply: bytes, ident: int, question: bytes) -> bool:
    """True when ``reply`` answers the query with ``ident`` and ``question``.

    The question is compared case-insensitively: the upstream may echo it in any
    case, but it must be the same name, type and class (RFC 5452 9.1).
    """
    if len(reply) < 12 + len(question):
        return False
    ident_r, flags, qdcount = struct.unpack_from("!HHH", reply)
    if ident_r != ident or not flags & QR or qdcount != 1:
        return False
    return reply[12:12 + len(question)].lower() == question.lower()


Waiter = tuple[bytes, "asyncio.Future[bytes]"]  # (our question, the reply's future)


def _normal_host(host: str) -> str:
    return host.split("%")[0].lower()


def _settle(waiters: dict[int, Waiter], data: bytes) -> bool:
    """Hand ``data`` to the query it answers (its ID, then the rules of
    :func:`acceptable`); False when it answers none of ``waiters``."""
    if len(data) < 12:
        return False
    ident = (data[0] << 8) | data[1]
    waiting = waiters.get(ident)
    if waiting is None or not acceptable(data, ident, waiting[0]):
        return False
    del waiters[ident]
    if not waiting[1].done():
        waiting[1].set_result(data)
    return True


def _fail(waiters: dict[int, Waiter], why: str) -> None:
    for _question, future in waiters.values():
        if not future.done():
            future.set_exception(ExchangeError(why))
    waiters.clear()


def _expire(future: asyncio.Future[bytes], why: str) -> None:
    if not future.done():
        future.set_exception(ExchangeError(why))


class _UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket to one upstream, on a port the kernel picked at
    random, carrying many queries at once: each reply goes to the query whose
    ID and question it matches, from the upstream's address (a connected socket
    drops other sources already; checked again in case a platform does not)."""

    def __init__(self, peer: HostPort, born: float) -> None:
        self.peer = peer
        self.born = born
        self.sent = 0
        self.waiters: dict[int, Waiter] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.retired = False    # takes no new query; closes once the last is answered
        self.ignored = 0        # datagrams that answered nothing we asked

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if (_normal_host(str(addr[0])), addr[1]) != self.peer or \
                not _settle(self.waiters, data):
            self.ignored += 1
            return
        if self.retired and not self.waiters:
            self.close()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: nobody listens at the
        # upstream's port, so every query waiting here is lost alike.
        _fail(self.waiters, f"udp error: {exc}")
        self.retired = True
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.retired = True
        _fail(self.waiters, "udp socket closed")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _UdpPool:
    """Up to ``size`` UDP sockets to one upstream, each replaced after
    ``max_queries`` queries or ``max_age`` seconds, so the source port keeps
    changing (RFC 5452 spirit) without a socket per query. A query goes out on
    a new socket while there are fewer than ``size``, else on one chosen at
    random."""

    def __init__(self, peer: HostPort, addr: HostPort, rng: random.Random, *, size: int,
                 max_queries: int, max_age: float) -> None:
        self.peer = peer
        self.addr = addr
        self.rng = rng
        self.size = size
        self.max_queries = max_queries
        self.max_age = max_age
        self.sockets: list[_UdpSocket] = []
        self.opening: list[asyncio.Future[_UdpSocket]] = []
        self.retired: set[_UdpSocket] = set()

    async def socket(self) -> _UdpSocket:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for sock in [s for s in self.sockets if s.retired or now - s.born >= self.max_age]:
            self._retire(sock)
        if len(self.sockets) + len(self.opening) < self.size:
            return await self._open(loop, now)
        if self.sockets:
            return self.sockets[self.rng.randrange(len(self.sockets))]
        # Every place is taken by a socket still being opened: share the first.
        return await asyncio.shield(self.opening[0])

    async def _open(self, loop: asyncio.AbstractEventLoop, now: float) -> _UdpSocket:
        opened: asyncio.Future[_UdpSocket] = loop.create_future()
        self.opening.append(opened)
        family = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
        try:
            _transport, sock = await loop.create_datagram_endpoint(
                lambda: _UdpSocket(self.peer, now), remote_addr=self.addr, family=family)
        except BaseException as exc:
            error = ExchangeError(f"udp socket: {exc}") if isinstance(exc, OSError) else exc
            opened.set_exception(error if isinstance(error, Exception)
                                 else ExchangeError("udp socket: open abandoned"))
            opened.exception()  # retrieved, whether anyone waits or not
            if isinstance(error, ExchangeError):
                raise error from None
            raise
        finally:
            self.opening.remove(opened)
        self.sockets.append(sock)
        opened.set_result(sock)
        return sock

    def sent(self, sock: _UdpSocket) -> None:
        sock.sent += 1
        if sock.sent >= self.max_queries:
            self._retire(sock)

    def _retire(self, sock: _UdpSocket) -> None:
        sock.retired = True
        if sock in self.sockets:
            self.sockets.remove(sock)
        if sock.waiters:
            self.retired.add(sock)  # closed by done() once its last query ends
        else:
            sock.close()

    def done(self, sock: _UdpSocket) -> None:
        """A query on ``sock`` ended (answered, timed out or cancelled)."""
        if sock.retired and not sock.waiters:
            self.retired.discard(sock)
            sock.close()

    def close(self) -> None:
        for sock in [*self.sockets, *self.retired]:
            _fail(sock.waiters, "forwarder closed")
            sock.close()
        self.sockets.clear()
        self.retired.clear()


class _TcpConnection(asyncio.Protocol):
    """One TCP connection to one upstream, reused and carrying several queries
    at once (RFC 7766 6.2.1.1: pipelining; replies may come in any order and are
    matched by ID and question). Closed after ``idle`` seconds with no query in
    flight (RFC 7766 6.2.3), at once when ``idle`` is 0, or when the upstream
    closes it."""

    def __init__(self, pool: _TcpPool, idle: float) -> None:
        self.pool = pool
        self.idle = idle
        self.waiters: dict[int, Waiter] = {}
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.answered = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.idle > 0:
            self._arm()  # with 0, the first query is on its way: it closes after it

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2:2 + length])
            del buffer[:2 + length]
            if _settle(self.waiters, message):
                self.answered += 1
        if not self.waiters:
            self._arm()

    def eof_received(self) -> bool:
        return False  # the upstream is done with this connection: close our side

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        _fail(self.waiters, "tcp: connection closed")
        self.pool.lost(self)

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and \
            not self.transport.is_closing()

    def send(self, ident: int, question: bytes, query: bytes,
             future: asyncio.Future[bytes]) -> None:
        assert self.transport is not None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.waiters[ident] = (question, future)
        self.transport.write(struct.pack("!H", len(query)) + query)

    def forget(self, ident: int, future: asyncio.Future[bytes]) -> None:
        waiting = self.waiters.get(ident)
        if waiting is not None and waiting[1] is future:
            del self.waiters[ident]
        if not self.waiters:
            self._arm()

    def _arm(self) -> None:
        """No query is in flight: close now, or after ``idle`` seconds."""
        if self.closed:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.idle <= 0:
            self.close()
        else:
            self._idle_timer = asyncio.get_running_loop().call_later(self.idle, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _TcpPool:
    """The open TCP connections to one upstream: a query goes on the least busy
    one, a new one is opened only when none is open or all are busy."""

    BUSY = 64           # queries in flight on one connection before another is opened
    MAX_CONNECTIONS = 4

    def __init__(self, addr: HostPort, idle: float) -> None:
        self.addr = addr
        self.idle = idle
        self.connections: list[_TcpConnection] = []
        self._connecting: asyncio.Future[_TcpConnection] | None = None

    async def connection(self, fresh: bool = False) -> tuple[_TcpConnection, bool]:
        """A connection to send on, and whether it was opened for this query."""
        open_ones = [c for c in self.connections if c.usable]
        if open_ones and not fresh:
            best = min(open_ones, key=lambda c: len(c.waiters))
            if len(best.waiters) < self.BUSY or len(open_ones) >= self.MAX_CONNECTIONS:
                return best, False
        if self._connecting is not None and not fresh:
            return await asyncio.shield(self._connecting), False
        loop = asyncio.get_running_loop()
        connecting: asyncio.Future[_TcpConnection] = loop.create_future()
        if not fresh:
            self._connecting = connecting
        try:
            _transport, conn = await loop.create_connection(
                lambda: _TcpConnection(self, self.idle), self.addr[0], self.addr[1])
        except BaseException as exc:
            # Whoever waits on this connect gets an error of its own kind, never
            # the opener's cancellation.
            connecting.set_exception(exc if isinstance(exc, Exception)
                                     else ExchangeError("tcp: connect abandoned"))
            connecting.exception()  # retrieved, whether anyone waits or not
            raise
        finally:
            if self._connecting is connecting:
                self._connecting = None
        self.connections.append(conn)
        connecting.set_result(conn)
        return conn, True

    def lost(self, conn: _TcpConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()


class Exchanger:
    """Sends one query to one upstream over UDP or TCP with a fresh random ID.

    UDP goes out on a small pool of sockets per upstream (see :class:`_UdpPool`)
    rather than a new socket per query: opening one costs more than the query,
    and at thousands of queries a second it starved the event loop. A TCP
    connection carries every query that comes while it is open, several in
    flight at once (RFC 7766), and is closed ``tcp_idle`` seconds after its last
    reply. The default is 0, closing it then: an upstream that serves TCP in its
    only process (dnsmasq in debug mode, ``-d``, forks no child for TCP) answers
    no UDP at all while a connection to it stays open. Call :meth:`close` to
    release every socket.
    """

    def __init__(self, rng: random.Random | None = None, *, udp_sockets: int = 16,
                 socket_queries: int = 100, socket_seconds: float = 10.0,
                 tcp_idle: float = 0.0) -> None:
        self.rng = rng if rng is not None else random.SystemRandom()
        self.udp_sockets = udp_sockets
        self.socket_queries = socket_queries
        self.socket_seconds = socket_seconds
        self.tcp_idle = tcp_idle
        self._udp: dict[HostPort, _UdpPool] = {}
        self._tcp: dict[HostPort, _TcpPool] = {}

    def new_id(self, taken: dict[int, Waiter]) -> int:
        """A random ID not in flight on the same socket or connection."""
        while True:
            ident = self.rng.randrange(0, 65536)
            if ident not in taken:
                return ident

    async def udp(self, addr: HostPort, question: bytes, *, do: bool, cd: bool,
                  timeout: float, edns: bool = True, marks: bytes = b"") -> bytes:
        pool = self._udp.get(addr)
        if pool is None:
            pool = self._udp[addr] = _UdpPool(
                (_normal_host(addr[0]), addr[1]), addr, self.rng, size=self.udp_sockets,
                max_queries=self.socket_queries, max_age=self.socket_seconds)
        sock = await pool.socket()
        loop = asyncio.get_running_loop()
        ident = self.new_id(sock.waiters)
        future: asyncio.Future[bytes] = loop.create_future()
        sock.waiters[ident] = (question, future)
        timer = loop.call_later(timeout, _expire, future, "udp timeout")
        try:
            assert sock.transport is not None
            sock.transport.sendto(build_query(ident, question, do=do, cd=cd, edns=edns,
                                              marks=marks))
            pool.sent(sock)
            return await future
        finally:
            timer.cancel()
            waiting = sock.waiters.get(ident)
            if waiting is not None and waiting[1] is future:
                del sock.waiters[ident]
            pool.done(sock)

    async def tcp(self, addr: HostPort, question: bytes, *, do: bool, cd: bool,
                  timeout: float, edns: bool = True, marks: bytes = b"") -> bytes:
        pool = self._tcp.get(addr)
        if pool is None:
            pool = self._tcp[addr] = _TcpPool(addr, self.tcp_idle)
        try:
            async with asyncio.timeout(timeout):
                conn, fresh = await pool.connection()
                try:
                    return await self._ask(conn, question, do, cd, edns, marks)
                except ExchangeError:
                    if fresh or conn.usable:
                        raise
                # The upstream had closed the reused connection before our query
                # reached it (RFC 7766 6.2.3 lets it close an idle one): once
                # more on a new connection.
                conn, _ = await pool.connection(fresh=True)
                return await self._ask(conn, question, do, cd, edns, marks)
        except TimeoutError:
            raise ExchangeError("tcp timeout") from None
        except OSError as exc:
            raise ExchangeError(f"tcp: {exc}") from None

    async def _ask(self, conn: _TcpConnection, question: bytes, do: bool, cd: bool,
                   edns: bool, marks: bytes) -> bytes:
        if not conn.usable:
            raise ExchangeError("tcp: connection closed")
        ident = self.new_id(conn.waiters)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.send(ident, question, build_query(ident, question, do=do, cd=cd, edns=edns,
                                               marks=marks), future)
        try:
            return await future
        finally:
            conn.forget(ident, future)

    def close(self) -> None:
        """Close every socket and connection; queries in flight fail."""
        for udp in self._udp.values():
            udp.close()
        for tcp in self._tcp.values():
            tcp.close()
        self._udp.clear()
        self._tcp.clear()
