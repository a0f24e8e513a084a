"""The handler: query bytes in, reply bytes out. The one place a packet's fate is
decided: drop, FORMERR, NOTIMP, REFUSED, BADVERS, an in-zone answer, forwarding,
or SERVFAIL when anything unexpected happens.

Transport-neutral: the server's protocol classes call :meth:`Handler.handle` and
send what it returns. Holds the hot path's caches of rendered replies (keyed by
the query's bytes after the ID; see ``replycache`` for every cache layer).
Forwarding plugs in through the ``Forwarder`` protocol below. Imports:
``answer``, ``records``, ``ratelimit``, ``replycache``, ``stats``, ``table``,
``wire``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from dnslib import QTYPE, RCODE

from dnsd import records as rr
from dnsd.answer import Answerer, AnswerSet, render
from dnsd.ratelimit import RateLimiter, Verdict
from dnsd.replycache import (
    CLIENTS_BYTES,
    ENTRY_OVERHEAD,
    FORWARDED_BYTES,
    MAX_KEY,
    RENDERED_BYTES,
    ReplyCache,
)
from dnsd.stats import LATENCY_BUCKETS, QueryStats
from dnsd.table import Table
from dnsd.wire import (
    BADVERS,
    CLASS_ANY,
    CLASS_IN,
    FORMERR,
    MAX_TCP,
    MAX_UDP,
    NOTIMP,
    OPCODE_QUERY,
    RD,
    REFUSED,
    SERVFAIL,
    T_ANY,
    Malformed,
    Query,
    error_reply,
    opt_record,
    parse_query,
    reply_flags,
    udp_limit,
)

log = logging.getLogger("dnsd.handler")
query_log = logging.getLogger("dnsd.query")

ZONE_TRANSFERS = (251, 252)  # IXFR, AXFR: not served (RFC 5936 allows REFUSED)
CHASED_TYPES = (rr.T_A, rr.T_AAAA, rr.T_SRV)  # whose external names are resolved upstream

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reply = bytes | None

MAX_ROTATIONS = 64      # answers with more records are rendered per query instead
MAX_CHASED_TARGETS = 8  # external SRV targets resolved upstream for one reply
KEY_LIMIT = MAX_KEY + 2  # the longest query (ID included) whose bytes key a cached reply


class CachedReply:
    """One in-zone reply without its 2-byte ID, one entry per rotation.

    The hot path: a query whose bytes after the ID were seen before under the
    same snapshot is answered by prepending its ID to the next rotation, with
    no parsing at all. Same bytes means same question (case included), flags,
    EDNS size and options, so the rendered reply is exactly what the slow path
    would build. The rotation counter is the answer set's, shared by every
    spelling of the question (EDNS cookies, 0x20 case), so clients that vary
    their bytes still see the records rotate. A rotation is rendered when it is
    first served, not all up front: a spelling asked once costs one render.
    ``size`` counts every rotation, so the cache's byte bound holds however
    many get rendered. ``hits`` are folded into the query statistics when they
    are read, not per query.
    """

    __slots__ = ("_render", "answer", "hits", "qtype", "rcode", "renders", "size")

    def __init__(self, qtype: int, rcode: int, answer: AnswerSet, turns: int, first: int,
                 rendered: bytes, render: Callable[[int], bytes], key_size: int) -> None:
        self.qtype = qtype
        self.rcode = rcode
        self.answer = answer
        self.renders: list[bytes | None] = [None] * turns
        self.renders[first] = rendered
        self._render = render
        self.size = ENTRY_OVERHEAD + key_size + turns * (len(rendered) + 8)
        self.hits = 0

    def next(self) -> bytes:
        renders = self.renders
        if len(renders) == 1:
            return renders[0]  # type: ignore[return-value]  # the first one is rendered
        turn = self.answer.next_turn() % len(renders)
        reply = renders[turn]
        return reply if reply is not None else self.fill(turn)

    def fill(self, turn: int) -> bytes:
        """Render rotation ``turn`` the first time it is served (the compiled
        UDP loop, which does what :meth:`next` does, calls this too)."""
        reply = self.renders[turn] = self._render(turn)
        return reply


class ForwardedReply:
    """A forwarded answer from the forwarder's cache, as rendered in one second
    of the clock: TTLs count down in whole seconds, so within that second the
    same bytes are the right answer and the forwarder need not render again."""

    __slots__ = ("hits", "qtype", "rcode", "second", "size", "tail")

    def __init__(self, second: int, tail: bytes, qtype: int, key_size: int) -> None:
        self.second = second
        self.tail = tail
        self.qtype = qtype
        self.rcode = tail[1] & 0xF
        self.hits = 0
        self.size = ENTRY_OVERHEAD + key_size + len(tail)


class _Allowed:
    """Whether one client may recurse, cached (``size`` for the cache's bound)."""

    __slots__ = ("allowed",)
    size = ENTRY_OVERHEAD

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed


class UdpCaches(NamedTuple):
    """The caches the compiled UDP loop (``dnsd._fastudp``) answers from by
    itself: it serves a query found in the young generation of ``replies``
    exactly as :meth:`Handler.handle`'s hot path does (hit counted, next
    rotation), and one found in the young generation of ``forwarded`` when the
    entry is this second's and ``allowed`` already says the client may recurse;
    with ``stats`` (timing on) it observes each such reply's latency there.
    Every other query goes to :meth:`Handler.handle`."""

    replies: ReplyCache[bytes, CachedReply]
    forwarded: ReplyCache[bytes, ForwardedReply]
    allowed: ReplyCache[str, _Allowed]
    stats: QueryStats | None
    buckets: tuple[float, ...] = LATENCY_BUCKETS


class Forwarder(Protocol):
    """What the handler needs from forwarding (``dnsd.forward.Forwarder``)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def stats(self) -> Any: ...

    def cached(self, query: Query, over_tcp: bool) -> bytes | None: ...

    async def forward(self, query: Query, over_tcp: bool) -> bytes: ...


class Handler:
    """Decides every reply. Call on the event loop thread."""

    def __init__(self, table: Table, answerer: Answerer, forwarder: Forwarder | None,
                 allow_recursion: Sequence[Network], *, udp_answer_limit: int = 0,
                 log_queries: bool = False, stats: QueryStats | None = None,
                 timed: bool = False, rate_limiter: RateLimiter | None = None) -> None:
        self.table = table
        self.answerer = answerer
        self.forwarder = forwarder if forwarder is not None and forwarder.enabled else None
        self.allow = tuple(allow_recursion)
        self.udp_answer_limit = udp_answer_limit
        self.log_queries = log_queries
        self.stats = stats if stats is not None else QueryStats()
        self.timed = timed or log_queries
        self._plain = not self.timed
        self.rate_limiter = rate_limiter
        self._origin = ""  # where the reply being built comes from, for the query log
        self._allowed_cache: ReplyCache[str, _Allowed] = ReplyCache(CLIENTS_BYTES)
        self._replies_version = -1
        # Hit counts live on the entries until read: fold those of entries
        # the caches drop, or replace, into the statistics first.
        self._replies: tuple[ReplyCache[bytes, CachedReply], ReplyCache[bytes, CachedReply]] = (
            ReplyCache(RENDERED_BYTES, lambda dropped: self._fold(dropped, "udp")),
            ReplyCache(RENDERED_BYTES, lambda dropped: self._fold(dropped, "tcp")))
        self._forwarded: tuple[ReplyCache[bytes, ForwardedReply],
                               ReplyCache[bytes, ForwardedReply]] = (
            ReplyCache(FORWARDED_BYTES, lambda dropped: self._fold(dropped, "udp", True)),
            ReplyCache(FORWARDED_BYTES, lambda dropped: self._fold(dropped, "tcp", True)))
        self._udp_caches = UdpCaches(self._replies[0], self._forwarded[0], self._allowed_cache,
                                     None)
        self._udp_caches_timed = self._udp_caches._replace(stats=self.stats)

    def udp_caches(self) -> UdpCaches | None:
        """The caches the compiled UDP loop may answer from until it next
        returns, made current for the table's version; None when every query
        must come to :meth:`handle` (rate limiting, the query log)."""
        if self.log_queries or self.rate_limiter is not None:
            return None
        version = self.table.snapshot.version
        if version != self._replies_version:
            self._drop_replies()
            self._replies_version = version
        return self._udp_caches_timed if self.timed else self._udp_caches

    def flush_stats(self) -> None:
        """Fold the hot path's per-reply hit counts into ``stats`` (before a read)."""
        self._fold(self._replies[0].values(), "udp")
        self._fold(self._replies[1].values(), "tcp")
        self._fold(self._forwarded[0].values(), "udp", True)
        self._fold(self._forwarded[1].values(), "tcp", True)

    def _fold(self, entries: Iterable[CachedReply | ForwardedReply], transport: str,
              forwarded: bool = False) -> None:
        hits = 0
        for entry in entries:
            if entry.hits:
                self.stats.count(entry.qtype, entry.rcode, transport, entry.hits)
                hits += entry.hits
                entry.hits = 0
        if forwarded and hits and self.forwarder is not None:
            self.forwarder.stats.cache_hits += hits

    def _drop_replies(self) -> None:
        self.flush_stats()
        for replies in self._replies:
            replies.clear()

    def reconfigure(self, *, answerer: Answerer, allow_recursion: Sequence[Network],
                    udp_answer_limit: int, log_queries: bool,
                    rate_limiter: RateLimiter | None) -> None:
        """Swap in new settings between two queries (SIGHUP)."""
        self.answerer = answerer
        self.allow = tuple(allow_recursion)
        self._allowed_cache.clear()
        self.udp_answer_limit = udp_answer_limit
        self.log_queries = log_queries
        self.timed = self.timed or log_queries
        self._plain = not self.timed
        self.rate_limiter = rate_limiter
        self._replies_version = -1  # rendered replies may differ now

    def handle(self, wire: bytes, client: str, over_tcp: bool,
               port: int = 0) -> Reply | Awaitable[Reply]:
        """The reply to one message from ``client`` (its IP address; ``port``
        only goes into the query log).

        - shorter than a header, or a response (QR=1): dropped (None);
        - unparsable past the header, or not exactly one question: FORMERR;
        - an opcode other than QUERY: NOTIMP;
        - an EDNS version other than 0: BADVERS (RFC 6891 6.1.3);
        - a class other than IN or ANY, or a zone transfer: REFUSED;
        - a name in dnsd's zones (or a PTR for an address in the table): the
          answer, authoritative; rcodes per :meth:`Answerer.lookup`;
        - another name, from a client allowed recursion, with upstreams: an
          awaitable of the forwarded reply; otherwise REFUSED;
        - any unexpected exception: SERVFAIL, logged with its traceback;
        - over UDP, a client prefix over ``--rate-limit``: no reply, or every
          second time an empty TC reply so a real client retries over TCP.
        """
        started = time.perf_counter() if self.timed else 0.0
        if self.rate_limiter is not None and not over_tcp:
            verdict = self.rate_limiter.check(client)
            if verdict is not Verdict.ALLOW:
                self.stats.rate_limited += 1
                self._origin = "rate-limit"
                return self._finish(None, self._slip(wire) if verdict is Verdict.SLIP
                                    else None, client, over_tcp, started, port)
        # The hot path: a reply rendered before, found by the query's bytes.
        version = self.table.snapshot.version
        if version != self._replies_version:
            self._drop_replies()
            self._replies_version = version
        reply: bytes | None = None
        if len(wire) <= KEY_LIMIT:
            key = wire[2:]
            replies = self._replies[over_tcp]
            cached = replies.young.get(key)
            if cached is None and replies.old:
                cached = replies.get(key)
            if cached is not None:
                cached.hits += 1
                if self._plain:  # the hottest path: nothing to log or time
                    return wire[:2] + cached.next()
                reply = wire[:2] + cached.next()
                self._origin = "table"
            else:
                fwd = self._forwarded[over_tcp].get(key)
                if (fwd is not None and fwd.second == int(time.monotonic())
                        and self.recursion_allowed(client)):
                    fwd.hits += 1
                    reply = wire[:2] + fwd.tail
                    self._origin = "forward-cache"
        if reply is not None:
            if self.log_queries:
                # counted=True: the cache entry's hits already count this reply
                return self._finish(parse_query(wire), reply, client, over_tcp, started, port,
                                    counted=True)
            if self.timed:
                self.stats.observe(time.perf_counter() - started)
            return reply
        query: Query | None = None
        result: Reply | Awaitable[Reply]
        self._origin = "dnsd"  # a reply dnsd makes up itself: an error, REFUSED
        try:
            if len(wire) < 12 or wire[2] & 0x80:
                return self._finish(None, None, client, over_tcp, started, port)
            try:
                query = parse_query(wire)
            except Malformed:
                return self._finish(None, error_reply(wire, FORMERR), client, over_tcp, started,
                                    port)
            result = self._answer(query, client, over_tcp)
        except Exception:
            log.exception("internal error answering a query from %s", client)
            result = error_reply(wire if query is None else query, SERVFAIL)
        if result is None or isinstance(result, bytes):
            return self._finish(query, result, client, over_tcp, started, port)
        return self._finish_later(query, result, client, over_tcp, started, port,
                                  self._origin)

    @staticmethod
    def _slip(wire: bytes) -> Reply:
        """The truncated reply a rate-limited client gets every other time, if
        its query parses (garbage over the limit gets nothing)."""
        if len(wire) < 12 or wire[2] & 0x80:
            return None
        try:
            return truncated_reply(parse_query(wire))
        except Malformed:
            return None

    def _answer(self, query: Query, client: str, over_tcp: bool) -> Reply | Awaitable[bytes]:
        if query.opcode != OPCODE_QUERY:
            return error_reply(query, NOTIMP)
        if query.edns is not None and query.edns.version != 0:
            return error_reply(query, BADVERS)
        if query.qclass not in (CLASS_IN, CLASS_ANY) or query.qtype in ZONE_TRANSFERS:
            return error_reply(query, REFUSED)
        answer: AnswerSet | None = self.answerer.lookup(query, self.table.snapshot)
        ra = self.forwarder is not None
        if answer is not None:
            self._origin = "table"
            if query.qtype == T_ANY and not over_tcp:
                answer = answer.one_rrset()
            limit = MAX_TCP if over_tcp else udp_limit(query)
            cap = self.udp_answer_limit if query.edns is None and not over_tcp else 0
            if answer.targets and query.qtype in CHASED_TYPES and self.forwarder is not None:
                if not self.recursion_allowed(client):
                    # Not cached by the query's bytes: a client allowed recursion
                    # asking the same bytes is owed the chased records.
                    return render(query, answer, limit=limit, answer_cap=cap, ra=ra)
                if query.qtype == rr.T_SRV:
                    return self._chase_targets(self.forwarder, query, answer, limit, ra)
                return self._chase(self.forwarder, query, answer, limit, ra)
            turns = len(answer.answers)
            if turns > MAX_ROTATIONS or len(query.wire) > KEY_LIMIT:
                return render(query, answer, limit=limit, answer_cap=cap, ra=ra)
            first = answer.next_turn() if turns > 1 else 0

            def render_turn(turn: int, query: Query = query, answer: AnswerSet = answer,
                            limit: int = limit, cap: int = cap) -> bytes:
                return render(query, answer, limit=limit, answer_cap=cap, ra=ra, turn=turn)[2:]

            key = query.wire[2:]
            rendered = render_turn(first)
            self._replies[over_tcp].put(key, CachedReply(
                query.qtype, answer.rcode, answer, max(turns, 1), first, rendered, render_turn,
                len(key)))
            return query.wire[:2] + rendered
        if self.forwarder is not None and self.recursion_allowed(client):
            hit = self.forwarder.cached(query, over_tcp)
            if hit is None:
                self._origin = "upstream"
                return self.forwarder.forward(query, over_tcp)
            self._origin = "forward-cache"
            if len(query.wire) <= KEY_LIMIT:
                key = query.wire[2:]
                self._forwarded[over_tcp].put(key, ForwardedReply(
                    int(time.monotonic()), hit[2:], query.qtype, len(key)))
            return hit
        return error_reply(query, REFUSED, ra=ra)

    async def _chase(self, forwarder: Forwarder, query: Query, answer: AnswerSet, limit: int,
                     ra: bool) -> bytes:
        """An external service's CNAME followed through the upstreams, as Consul
        does with its recursors: stub resolvers such as glibc do not chase a
        CNAME themselves, so without the target's addresses curl would fail.
        If the target does not resolve, the CNAME alone is the answer; only the
        chain from the target is taken from the upstream's reply, with the
        CNAME's TTL (Consul gives chased records the service's). A target in
        dnsd's own zones was followed when the answer was built: it is never
        forwarded."""
        turn = answer.next_turn() % len(answer.answers)
        target = answer.targets[turn]
        if not target:
            return render(query, answer, limit=limit, ra=ra, turn=turn)
        sub = parse_query(question_wire(target, query.qtype))
        chased = rr.address_answers(await forwarder.forward(sub, False), target, answer.ttl)
        full = AnswerSet(answer.rcode, (answer.answers[turn], *chased))
        return render(query, full, limit=limit, ra=ra, turn=0)

    async def _chase_targets(self, forwarder: Forwarder, query: Query, answer: AnswerSet,
                             limit: int, ra: bool) -> bytes:
        """SRV targets that are external host names, resolved through the
        upstreams (A and AAAA, at once) into the additional section, as Consul
        does with its recursors. A target that does not resolve goes without;
        the SRV answer stands either way."""
        names = list(dict.fromkeys(t for t in answer.targets if t))[:MAX_CHASED_TARGETS]

        async def addresses(name: str, qtype: int) -> list[bytes]:
            reply = await forwarder.forward(parse_query(question_wire(name, qtype)), False)
            return rr.address_answers(reply, name, answer.ttl)

        found = await asyncio.gather(*(addresses(name, qtype) for name in names
                                       for qtype in (rr.T_A, rr.T_AAAA)),
                                     return_exceptions=True)
        by_name: dict[str, list[bytes]] = {}
        for index, records in enumerate(found):
            if isinstance(records, BaseException):
                log.debug("SRV target %s: %s", names[index // 2], records)
                continue
            by_name.setdefault(names[index // 2], []).extend(records)
        extras = tuple((*extra, *by_name.get(target, ())) if target else extra
                       for extra, target in zip(answer.extras, answer.targets, strict=True))
        full = AnswerSet(answer.rcode, answer.answers, answer.authority, extras,
                         answer.additional, late=answer.late, cap=answer.cap)
        return render(query, full, limit=limit, ra=ra, turn=answer.next_turn())

    def recursion_allowed(self, client: str) -> bool:
        known = self._allowed_cache.get(client)
        if known is None:
            try:
                ip = ipaddress.ip_address(client.split("%")[0])
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            known = _Allowed(any(ip in net for net in self.allow))
            self._allowed_cache.put(client, known)
        return known.allowed

    async def _finish_later(self, query: Query | None, pending: Awaitable[Reply], client: str,
                            over_tcp: bool, started: float, port: int, origin: str) -> Reply:
        try:
            reply = await pending
        except Exception:
            log.exception("internal error forwarding a query from %s", client)
            reply = error_reply(query, SERVFAIL) if query is not None else None
        self._origin = origin
        return self._finish(query, reply, client, over_tcp, started, port)

    def _finish(self, query: Query | None, reply: Reply, client: str, over_tcp: bool,
                started: float, port: int = 0, counted: bool = False) -> Reply:
        transport = "tcp" if over_tcp else "udp"
        if reply is None:
            self.stats.dropped += 1
        elif not counted:
            self.stats.count(query.qtype if query is not None else 0, reply[3] & 0xF, transport)
        if self.timed:
            self.stats.observe(time.perf_counter() - started)
        if self.log_queries:
            self._log_query(query, reply, client, port, transport, started)
        return reply

    def _log_query(self, query: Query | None, reply: Reply, client: str, port: int,
                   transport: str, started: float) -> None:
        """One line: who asked, what, the answer's rcode and size, where it came from."""
        if reply is not None and len(reply) >= 12:
            rcode = RCODE.get(reply[3] & 0xF, str(reply[3] & 0xF))
            answers = str(int.from_bytes(reply[6:8], "big"))
        else:
            rcode, answers = "dropped", "-"
        if query is not None:
            ident, name, qtype = query.id, query.text(), QTYPE.get(query.qtype, str(query.qtype))
        else:
            ident = int.from_bytes(reply[:2] if reply else b"\0\0", "big")
            name, qtype = "?", "?"
        peer = f"[{client}]" if ":" in client else client
        query_log.info("%s#%d %s id=%d %s %s %s answers=%s from=%s %.2fms", peer, port,
                       transport, ident, name, qtype, rcode, answers, self._origin,
                       (time.perf_counter() - started) * 1000)


def question_wire(name: str, qtype: int) -> bytes:
    """A recursive query of our own (random ID, RD, EDNS0 at 1232 bytes)."""
    header = struct.pack("!HHHHHH", secrets.randbits(16), RD, 1, 0, 0, 1)
    return (header + rr.name(name) + struct.pack("!HH", qtype, CLASS_IN)
            + opt_record(MAX_UDP, False))


def truncated_reply(query: Query) -> bytes:
    """An empty reply with TC set: "ask again over TCP" (RFC 7766 5)."""
    flags = reply_flags(query, 0, aa=False, ra=False, tc=True)
    return struct.pack("!HHHHHH", query.id, flags, 1, 0, 0, 0) + query.question
