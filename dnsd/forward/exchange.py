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
Imports: ``records`` (type numbers), ``wire``, dnslib (rebuilding a reply that
lost records) and the stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

from dnslib import DNSRecord

from dnsd.records import T_CNAME, T_DNAME, T_RRSIG, T_SOA
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


QNAME_POINTER = b"\xc0\x0c"  # a name compressed to the question's, at offset 12


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


class _UdpClient(asyncio.DatagramProtocol):
    """One UDP query on its own connected socket; resolves with the first
    acceptable reply. A connected socket already drops datagrams from other
    addresses; the address is checked again in case the platform does not."""

    def __init__(self, peer: tuple[str, int], ident: int, question: bytes) -> None:
        self.peer = peer
        self.ident = ident
        self.question = question
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.ignored = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.done.done():
            return
        if (_normal_host(str(addr[0])), addr[1]) != self.peer or \
                not acceptable(data, self.ident, self.question):
            self.ignored += 1
            return
        self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: nobody listens there.
        if not self.done.done():
            self.done.set_exception(ExchangeError(f"udp error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ExchangeError("udp socket closed"))


def _normal_host(host: str) -> str:
    return host.split("%")[0].lower()


@dataclass
class Exchanger:
    """Sends one query to one upstream over UDP or TCP with a fresh random ID
    (and, over UDP, a fresh socket whose port the kernel picks at random)."""

    rng: random.Random = field(default_factory=random.SystemRandom)

    def new_id(self) -> int:
        return self.rng.randrange(0, 65536)

    async def udp(self, addr: tuple[str, int], question: bytes, *, do: bool, cd: bool,
                  timeout: float, edns: bool = True, marks: bytes = b"") -> bytes:
        ident = self.new_id()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        peer = (_normal_host(addr[0]), addr[1])
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _UdpClient(peer, ident, question), remote_addr=addr, family=family)
        except OSError as exc:
            raise ExchangeError(f"udp socket: {exc}") from None
        try:
            transport.sendto(build_query(ident, question, do=do, cd=cd, edns=edns,
                                         marks=marks))
            return await asyncio.wait_for(asyncio.shield(proto.done), timeout)
        except TimeoutError:
            raise ExchangeError("udp timeout") from None
        finally:
            transport.close()
            if not proto.done.done():
                proto.done.cancel()
            elif not proto.done.cancelled():
                proto.done.exception()  # mark retrieved: never "exception never retrieved"

    async def tcp(self, addr: tuple[str, int], question: bytes, *, do: bool, cd: bool,
                  timeout: float, edns: bool = True, marks: bytes = b"") -> bytes:
        ident = self.new_id()
        try:
            return await asyncio.wait_for(
                self._tcp(addr, ident, question, do=do, cd=cd, edns=edns, marks=marks),
                timeout)
        except TimeoutError:
            raise ExchangeError("tcp timeout") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise ExchangeError(f"tcp: {exc}") from None

    async def _tcp(self, addr: tuple[str, int], ident: int, question: bytes, *, do: bool,
                   cd: bool, edns: bool, marks: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            query = build_query(ident, question, do=do, cd=cd, edns=edns, marks=marks)
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            # RFC 7766 allows unrelated messages on a stream; skip any that do not match.
            for _ in range(8):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await reader.readexactly(length)
                if acceptable(reply, ident, question):
                    return reply
            raise ExchangeError("tcp: no matching reply")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
