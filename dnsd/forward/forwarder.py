"""The forwarding decision: every name that is not dnsd's goes to upstream
resolvers, and this module decides what the client gets back.

Owns the cache lookup, the coalescing of identical concurrent misses, the
tries in order (UDP, then TCP when truncated), serve-stale, and rendering the
reply each client is owed: its ID, its question byte for byte, our OPT when it
sent one, and a UDP size it can take. Where a name goes is ``routes``, the try
order ``policy``, upstream health ``health``, one exchange ``exchange``, what
may be cached ``cache``.

Outcome -> reply, decided in :meth:`Forwarder.forward` only:
- a fresh cache entry: that answer, TTLs counted down;
- an upstream's NOERROR/NXDOMAIN (other rcodes count as that upstream failing):
  that answer, its answer section kept to the question's CNAME chain
  (``exchange.in_bailiwick``), cached per ``forward.cache``;
- every upstream failed, or all are down, and an expired entry is still in the
  stale window: the stale answer with short TTLs (RFC 8767);
- every upstream failed otherwise: SERVFAIL;
- no upstream routes the name, or the name is in dnsd's own zones (the handler
  never sends those; checked again so a bug cannot make dnsd forward them): REFUSED;
- a query this process forwarded itself, come back through a forwarding loop:
  SERVFAIL at once, never forwarded again (see "Forwarding loops" below).

Forwarding loops: every query dnsd sends upstream carries an EDNS0 option
(``wire.OPTION_FORWARDED_BY``) listing the random marks of the dnsd processes it
went through, this one's last. IDs and letter case change at every hop, but
forwarders pass EDNS options through (dnsmasq does; dnsd copies the marks it
received, adding its own), so a query that comes back carries our own mark.
It is answered SERVFAIL, logged once a minute at most, and counted. A query with
more than ``MAX_MARKS`` marks is taken for a loop as well.

Imports: ``hostport``, ``render``, ``wire``, and ``forward``'s other modules
(``cache``, ``exchange``, ``health``, ``policy``, ``routes``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnsd.forward.cache import Cache, CacheKey, CachePolicy, Entry, make_entry
from dnsd.forward.exchange import ExchangeError, Exchanger, Reply, in_bailiwick, read_reply
from dnsd.forward.health import Health, Upstream
from dnsd.forward.policy import policy_named
from dnsd.forward.routes import build_routes, wire_key
from dnsd.hostport import HostPort
from dnsd.render import fitted_reply
from dnsd.wire import (
    AD,
    CD,
    FORMERR,
    MAX_TCP,
    NOERROR,
    NXDOMAIN,
    OPTION_FORWARDED_BY,
    REFUSED,
    SERVFAIL,
    Malformed,
    Query,
    edns_option,
    error_reply,
    name_suffixes,
    name_text,
    udp_limit,
)

log = logging.getLogger("dnsd.forward")

T = TypeVar("T")
_TTL = struct.Struct("!I")
MARK_SIZE = 8             # bytes of one process's forwarded-by mark
MAX_MARKS = 8             # dnsd hops a query may have made: more is a loop too
LOOP_LOG_INTERVAL = 60.0  # seconds between two log lines about forwarding loops


@dataclass(frozen=True, slots=True)
class ForwardTiming:
    """Timing, health, cache and socket knobs; the defaults are what dnsd runs with."""

    try_timeout: float = 1.0       # per upstream try over UDP: a stub waits 5 s in all
    tcp_timeout: float = 1.5       # per TCP try: a handshake more than UDP
    deadline: float = 3.5          # the whole attempt: well inside a stub's 5 s
    # Consecutive failed tries that mark an upstream down. One: a failed try has
    # already cost a full timeout, and a wrongly marked upstream costs little
    # (it is still tried when all are down, and its probe brings it back).
    max_fails: int = 1
    probe_interval: float = 0.5    # how often a down upstream is probed
    cache: CachePolicy = field(default_factory=CachePolicy)
    # Upstream sockets (forward.exchange): UDP sockets per upstream, each on its
    # own random port and replaced after so many queries or seconds; idle
    # seconds before a TCP connection is closed (0: after its last reply, as
    # some upstreams answer no UDP while a TCP connection to them is open).
    udp_sockets: int = 16
    socket_queries: int = 100
    socket_seconds: float = 10.0
    tcp_idle: float = 0.0


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """What forwarding needs to know, and nothing more (never the whole Config)."""

    upstreams: tuple[HostPort, ...] | None = None  # None: resolv.conf's nameservers
    upstream_for: tuple[tuple[str, HostPort], ...] = ()  # (domain, upstream), in order
    policy: str = "sequential"                     # see forward.policy
    listen: tuple[HostPort, ...] = ()              # dnsd's own addresses: never upstreams
    domains: tuple[str, ...] = ("consul",)         # dnsd's zones: never forwarded
    timing: ForwardTiming = field(default_factory=ForwardTiming)


@dataclass(slots=True)
class ForwardStats:
    """Plain counters for the metrics endpoint (one event loop: no locking)."""

    forwarded: int = 0          # resolutions sent upstream (one per miss, not per try)
    cache_hits: int = 0
    cache_misses: int = 0
    coalesced: int = 0          # misses that joined an identical one already in flight
    upstream_failures: int = 0  # failed tries: timeouts, errors, SERVFAIL/REFUSED replies
    stale_served: int = 0
    servfail: int = 0           # SERVFAILs built because nothing could answer
    refused: int = 0
    loops: int = 0              # our own queries come back (answered SERVFAIL)
    scrubbed: int = 0           # upstream answers that held records of other names


def render(query: Query, reply: Reply, ttls: Sequence[int], *, limit: int) -> bytes:
    """The upstream reply re-addressed to ``query``'s client, fitted into ``limit``.

    Its ID and question (exactly as sent: resolvers check the 0x20 case), the
    records with ``ttls`` written in, our OPT instead of the upstream's, the
    upstream's AD, AA clear (dnsd is no authority for names it forwards).
    The records keep their places: the header and question in front of them
    have the lengths they had in the upstream's reply, so compression pointers
    still land on the same bytes. For the same reason the additional section
    is one unit for :func:`~dnsd.render.fit`: all of it or none of it.
    """
    wire = reply.wire
    chunks = [wire[rec.start:rec.ttl_at] + _TTL.pack(ttl) + wire[rec.ttl_at + 4:rec.end]
              for rec, ttl in zip(reply.records, ttls, strict=True)]
    answers, authority, _ = reply.counts
    end = answers + authority
    return fitted_reply(query, reply.rcode, limit=limit, aa=False, ra=True,
                        flags=reply.flags & AD, answers=chunks[:answers],
                        authority=chunks[answers:end],
                        additional=(chunks[end:],) if len(chunks) > end else ())


def forwarded_by(query: Query) -> bytes:
    """The forwarded-by marks a query carries (whole marks only), or b""."""
    if query.edns is None or not query.edns.options:
        return b""
    marks = edns_option(query.edns.options, OPTION_FORWARDED_BY)
    if not marks:
        return b""
    return marks[:len(marks) - len(marks) % MARK_SIZE]


class Forwarder:
    """Forwards out-of-zone queries; see the module docstring for the outcomes."""

    def __init__(self, settings: ForwardSettings, *, now: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 resolv_conf: str = "/etc/resolv.conf") -> None:
        self.settings = settings
        self.timing = settings.timing
        self.now = now
        self.rng = rng or random.Random()
        self.exchanger = Exchanger(random.SystemRandom() if rng is None else rng,
                                   udp_sockets=self.timing.udp_sockets,
                                   socket_queries=self.timing.socket_queries,
                                   socket_seconds=self.timing.socket_seconds,
                                   tcp_idle=self.timing.tcp_idle)
        self.policy = policy_named(settings.policy, self.rng)
        # This process's forwarded-by mark (see "Forwarding loops"): random, so
        # two dnsd on different hosts never share one.
        self.mark = self.exchanger.rng.randbytes(MARK_SIZE)
        self.cache = Cache(self.timing.cache)
        self.stats = ForwardStats()
        self.own_zones = frozenset(wire_key(d) for d in settings.domains)
        self.upstreams: dict[HostPort, Upstream] = {}
        self.routes = build_routes(settings.upstreams, settings.upstream_for, settings.listen,
                                   resolv_conf, self._upstream)
        self.health = Health(self.exchanger, self._spawn, max_fails=self.timing.max_fails,
                             probe_interval=self.timing.probe_interval,
                             probe_timeout=self.timing.try_timeout, mark=self.mark)
        self._loop_logged: float | None = None
        self._loops_unlogged = 0
        self._inflight: dict[tuple[CacheKey, bool], asyncio.Task[Entry | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _upstream(self, addr: HostPort) -> Upstream:
        """One Upstream per address, whichever routes name it: one health each."""
        found = self.upstreams.get(addr)
        if found is None:
            found = self.upstreams[addr] = Upstream(addr)
        return found

    @property
    def enabled(self) -> bool:
        return not self.routes.empty

    async def start(self) -> None:
        """Log where names go. Probes start on demand, when an upstream goes down."""
        if self.routes.default:
            log.info("forwarding to %s (%s)", ", ".join(map(str, self.routes.default)),
                     self.policy.name)
        for key, ups in self.routes.per_domain.items():
            log.info("forwarding %s to %s", name_text(key), ", ".join(map(str, ups)))

    async def close(self) -> None:
        """Cancel every task this forwarder started, wait for them, and close
        the upstream sockets."""
        self.health.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()
        self.exchanger.close()

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the one decision -------------------------------------------------------

    def cached(self, query: Query, over_tcp: bool) -> bytes | None:
        """The reply from a fresh cache entry, or None. Synchronous, so the
        handler answers cache hits without starting a task (the hot path)."""
        do = query.edns is not None and query.edns.do
        key: CacheKey = (query.key, query.qtype, query.qclass, do, bool(query.flags & CD))
        now = self.now()
        entry = self.cache.get(key, now)
        if entry is None:
            return None
        self.stats.cache_hits += 1
        limit = MAX_TCP if over_tcp else udp_limit(query)
        return render(query, entry.reply, entry.served_ttls(now, 0), limit=limit)

    async def forward(self, query: Query, over_tcp: bool) -> bytes:
        """The complete reply to send the client (see the module docstring)."""
        limit = MAX_TCP if over_tcp else udp_limit(query)
        if self._in_own_zone(query.key):
            log.error("refusing to forward %s: it is in dnsd's own zone", query.text())
            self.stats.refused += 1
            return error_reply(query, REFUSED, ra=True)
        marks = forwarded_by(query)
        if marks and self._looped(marks):
            return self._loop(query)
        upstreams = self.routes.lookup(query.key)
        if not upstreams:
            self.stats.refused += 1
            return error_reply(query, REFUSED, ra=True)
        hit = self.cached(query, over_tcp)
        if hit is not None:
            return hit
        do = query.edns is not None and query.edns.do
        key: CacheKey = (query.key, query.qtype, query.qclass, do, bool(query.flags & CD))
        self.stats.cache_misses += 1

        if all(u.down for u in upstreams):
            # Known to be unreachable (the probe will say when they are back):
            # answer stale at once rather than after a timeout (RFC 8767 5).
            stale = self._stale(query, key, limit)
            if stale is not None:
                return stale

        flight = (key, over_tcp)
        task = self._inflight.get(flight)
        if task is None:
            question = query.key + query.question[len(query.qname):]
            task = self._spawn(self._resolve(key, question, upstreams, over_tcp,
                                             marks + self.mark))
            self._inflight[flight] = task
            task.add_done_callback(lambda _t: self._inflight.pop(flight, None))
        else:
            self.stats.coalesced += 1
        # shield: one client going away must not cancel the others' shared query.
        entry = await asyncio.shield(task)
        if entry is not None:
            return render(query, entry.reply, entry.served_ttls(self.now(), 0), limit=limit)
        stale = self._stale(query, key, limit)
        if stale is not None:
            return stale
        self.stats.servfail += 1
        return error_reply(query, SERVFAIL, ra=True)

    def _stale(self, query: Query, key: CacheKey, limit: int) -> bytes | None:
        now = self.now()
        entry = self.cache.get_stale(key, now)
        if entry is None:
            return None
        self.stats.stale_served += 1
        ttls = entry.served_ttls(now, self.timing.cache.stale_ttl)
        return render(query, entry.reply, ttls, limit=limit)

    def _in_own_zone(self, key: bytes) -> bool:
        return any(suffix in self.own_zones for suffix in name_suffixes(key))

    def _looped(self, marks: bytes) -> bool:
        """True when ``marks`` hold our own mark, or more hops than any sane
        chain of forwarders makes."""
        if len(marks) >= MAX_MARKS * MARK_SIZE:
            return True
        mark = self.mark
        return any(marks[i:i + MARK_SIZE] == mark for i in range(0, len(marks), MARK_SIZE))

    def _loop(self, query: Query) -> bytes:
        """SERVFAIL for a query we forwarded that came back: never forward it
        again, or each turn round the loop would send it once more."""
        self.stats.loops += 1
        now = self.now()
        if self._loop_logged is None or now - self._loop_logged >= LOOP_LOG_INTERVAL:
            also = (f" ({self._loops_unlogged} more since the last report)"
                    if self._loops_unlogged else "")
            log.warning("forwarding loop: %s came back to dnsd after dnsd forwarded it "
                        "(an upstream leads back here); answering SERVFAIL%s",
                        query.text(), also)
            self._loop_logged = now
            self._loops_unlogged = 0
        else:
            self._loops_unlogged += 1
        return error_reply(query, SERVFAIL, ra=True)

    # --- upstream tries -----------------------------------------------------------

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        """The try order: the policy's order of the healthy upstreams; when all
        are down, only one of them, the policy's first (it may be back before
        its probe notices)."""
        healthy = [u for u in upstreams if not u.down]
        if healthy:
            return self.policy.order(healthy)
        return self.policy.order(upstreams)[:1]

    async def _resolve(self, key: CacheKey, question: bytes, upstreams: Sequence[Upstream],
                       over_tcp: bool, marks: bytes) -> Entry | None:
        """Ask the upstreams in order until one answers; cache what may be cached.
        ``marks``: the forwarded-by marks to send, ours last."""
        self.stats.forwarded += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.deadline
        _name, _qtype, _qclass, do, cd = key
        for up in self.order(upstreams):
            if deadline - loop.time() < 0.05:
                break
            up.queries += 1
            try:
                reply = await self._try(up, question, do, cd, over_tcp, deadline, marks)
                answered = in_bailiwick(reply, key[0])
            except (ExchangeError, Malformed) as exc:
                self.stats.upstream_failures += 1
                self.health.failed(up, str(exc))
                continue
            self.health.alive(up)
            if reply.rcode not in (NOERROR, NXDOMAIN):
                # The upstream is alive but could not answer: ask the next one.
                up.failures += 1
                self.stats.upstream_failures += 1
                log.debug("upstream %s answered rcode %d", up, reply.rcode)
                continue
            if answered is not reply:
                self.stats.scrubbed += 1
                log.debug("upstream %s answered %s with records of other names; "
                          "dropped them", up, name_text(key[0]))
            entry = make_entry(answered, self.now(), self.timing.cache)
            self.cache.put(key, entry)
            return entry
        return None

    async def _try(self, up: Upstream, question: bytes, do: bool, cd: bool, over_tcp: bool,
                   deadline: float, marks: bytes) -> Reply:
        """One upstream, UDP then TCP if truncated (TCP only for a TCP client);
        once more without EDNS if the upstream says FORMERR to our OPT."""
        loop = asyncio.get_running_loop()
        edns = True
        for _ in range(2):
            tcp = over_tcp
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise ExchangeError("out of time")
                if tcp:
                    wire = await self.exchanger.tcp(
                        up.addr, question, do=do, cd=cd, edns=edns, marks=marks,
                        timeout=min(self.timing.tcp_timeout, left))
                else:
                    wire = await self.exchanger.udp(
                        up.addr, question, do=do, cd=cd, edns=edns, marks=marks,
                        timeout=min(self.timing.try_timeout, left))
                reply = read_reply(wire)
                if reply.truncated and not tcp:
                    tcp = True  # RFC 7766 5: a truncated UDP answer is retried over TCP
                    continue
                break
            if reply.rcode == FORMERR and edns:
                edns = False
                continue
            return reply
        return reply
