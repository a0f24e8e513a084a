"""Forwarding: every name that is not dnsd's goes to upstream resolvers.

Owns the routing (``--upstream``, ``--upstream-for``, most specific domain wins),
the try order (``sequential`` or ``random``), upstream health (down after
``max_fails`` consecutive failures, a background probe brings it back), the
coalescing of identical concurrent misses, serve-stale, and rendering the reply
each client is owed: its ID, its question byte for byte, our OPT when it sent one,
and a UDP size it can take.

Outcome -> reply, decided in :meth:`Forwarder.forward` only:
- a fresh cache entry: that answer, TTLs counted down;
- an upstream's NOERROR/NXDOMAIN (other rcodes count as that upstream failing):
  that answer, cached per ``forward_cache``;
- every upstream failed, or all are down, and an expired entry is still in the
  stale window: the stale answer with short TTLs (RFC 8767);
- every upstream failed otherwise: SERVFAIL;
- no upstream routes the name, or the name is in dnsd's own zones (the handler
  never sends those; checked again so a bug cannot make dnsd forward them): REFUSED.

Imports: ``config``, ``errors``, ``forward_cache``, ``upstream``, ``wire``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import struct
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnsd.config import Config, HostPort
from dnsd.errors import ConfigError
from dnsd.forward_cache import Cache, CacheKey, CachePolicy, Entry, make_entry
from dnsd.upstream import (
    ADDITIONAL,
    EDNS_SIZE,
    ExchangeError,
    Exchanger,
    Reply,
    read_reply,
)
from dnsd.wire import (
    AD,
    CD,
    FORMERR,
    HEADER,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    TC,
    Malformed,
    Query,
    encode_name,
    name_text,
    opt_record,
    reply_flags,
    udp_limit,
)
from dnsd.wire import error_reply as wire_error_reply

log = logging.getLogger("dnsd.forward")

MAX_TCP = 65535
T = TypeVar("T")
PROBE_QUESTION = b"\x00" + struct.pack("!HH", 2, 1)  # ". NS IN": cheap, any answer will do


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """Timing and health knobs; the defaults are what dnsd runs with."""

    try_timeout: float = 1.0       # per upstream try over UDP: a stub waits 5 s in all
    tcp_timeout: float = 1.5       # per TCP try: a handshake more than UDP
    deadline: float = 3.5          # the whole attempt: well inside a stub's 5 s
    # Consecutive failed tries that mark an upstream down. One: a failed try has
    # already cost a full timeout, and a wrongly marked upstream costs little
    # (it is still tried when all are down, and its probe brings it back).
    max_fails: int = 1
    probe_interval: float = 0.5    # how often a down upstream is probed
    cache: CachePolicy = field(default_factory=CachePolicy)


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


@dataclass(eq=False, slots=True)
class Upstream:
    """One upstream address and its health. Shared by every route naming it."""

    addr: HostPort
    fails: int = 0              # consecutive failed tries
    down: bool = False
    queries: int = 0
    failures: int = 0
    probe: asyncio.Task[None] | None = None

    def __str__(self) -> str:
        host, port = self.addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_upstreams(resolv_conf: str, own: Sequence[tuple[str, int]]
                      ) -> tuple[tuple[str, int], ...]:
    """The ``nameserver`` lines of resolv.conf text (port 53), minus dnsd's own
    listen addresses: forwarding to ourselves would loop. Bad lines are skipped."""
    found: list[tuple[str, int]] = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(words[1].split("%")[0])
        except ValueError:
            continue
        addr = (words[1] if "%" in words[1] else str(ip), 53)
        if not is_own(addr, own) and addr not in found:
            found.append(addr)
    return tuple(found)


# Docker's embedded resolver. Inside a container on a user-defined network,
# resolv.conf names it, and the engine redirects 127.0.0.11:53 in the
# container's own namespace (iptables DNAT) to its resolver: a wildcard listener
# there never receives what is sent to it, so it is a real upstream.
DOCKER_RESOLVER = ipaddress.ip_address("127.0.0.11")


def is_own(addr: tuple[str, int], own: Iterable[tuple[str, int]]) -> bool:
    """True when ``addr`` reaches one of dnsd's listen addresses. A wildcard
    listener (0.0.0.0 or ::) is reached through any loopback address too, except
    Docker's resolver 127.0.0.11, which is ours only when listened on by name."""
    try:
        ip = ipaddress.ip_address(addr[0].split("%")[0])
    except ValueError:
        return False
    for host, port in own:
        if port != addr[1]:
            continue
        try:
            mine = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            continue
        if mine == ip:
            return True
        if mine.is_unspecified and (ip.is_unspecified
                                    or (ip.is_loopback and ip != DOCKER_RESOLVER)):
            return True
    return False


def _wire_key(domain: str) -> bytes:
    return encode_name(domain.lower())


def _suffixes(key: bytes) -> Iterable[bytes]:
    """The wire name and each parent, longest first, ending with the root."""
    pos = 0
    while pos < len(key):
        yield key[pos:]
        if key[pos] == 0:
            return
        pos += 1 + key[pos]


class Routes:
    """Which upstreams a name goes to: the most specific ``--upstream-for``
    domain containing it, else the default upstreams."""

    def __init__(self, default: Sequence[Upstream],
                 per_domain: dict[bytes, tuple[Upstream, ...]]) -> None:
        self.default = tuple(default)
        self.per_domain = per_domain

    def lookup(self, key: bytes) -> tuple[Upstream, ...]:
        if self.per_domain:
            for suffix in _suffixes(key):
                found = self.per_domain.get(suffix)
                if found is not None:
                    return found
        return self.default


def error_reply(query: Query, rcode: int) -> bytes:
    """A reply carrying only ``rcode``, with RA: the client's ID and question."""
    return wire_error_reply(query.wire, rcode, query, ra=True)


def render(query: Query, reply: Reply, ttls: Sequence[int], *, limit: int) -> bytes:
    """The upstream reply re-addressed to ``query``'s client.

    Its ID and question (exactly as sent: resolvers check the 0x20 case), the
    records with ``ttls`` written in, our OPT instead of the upstream's, AA clear
    (dnsd is no authority for names it forwards). When the
    whole does not fit ``limit``, the additional section goes first (no TC
    needed, RFC 2181 9), then whole records from the end, with TC set.
    """
    wire = reply.wire
    opt = opt_record(EDNS_SIZE, query.edns.do) if query.edns is not None else b""
    chunks: list[bytes] = []
    for rec, ttl in zip(reply.records, ttls, strict=True):
        chunks.append(wire[rec.start:rec.ttl_at] + struct.pack("!I", ttl)
                      + wire[rec.ttl_at + 4:rec.end])
    base = 12 + len(query.question) + len(opt)
    sections = [rec.section for rec in reply.records]
    keep = len(chunks)
    tc = False
    size = base + sum(len(c) for c in chunks)
    if size > limit:
        keep = sum(1 for s in sections if s != ADDITIONAL)
        size = base + sum(len(c) for c in chunks[:keep])
        while size > limit and keep > 0:
            keep -= 1
            size -= len(chunks[keep])
            tc = True
    counts = [0, 0, 0, 0]
    for section in sections[:keep]:
        counts[section] += 1
    extra = (reply.flags & AD) | (TC if tc else 0)
    header = HEADER.pack(query.id, reply_flags(query, reply.rcode, aa=False, ra=True,
                                               extra=extra), 1,
                         counts[1], counts[2], counts[3] + (1 if opt else 0))
    return b"".join([header, query.question, *chunks[:keep], opt])


class Forwarder:
    """Forwards out-of-zone queries; see the module docstring for the outcomes."""

    def __init__(self, config: Config, *, now: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 settings: ForwardSettings | None = None,
                 resolv_conf: str = "/etc/resolv.conf") -> None:
        self.settings = settings or ForwardSettings()
        self.now = now
        self.rng = rng or random.Random()
        self.exchanger = Exchanger(random.SystemRandom() if rng is None else rng)
        self.policy = config.upstream_policy
        self.cache = Cache(self.settings.cache)
        self.stats = ForwardStats()
        self.own_zones = frozenset(_wire_key(d) for d in config.domains)
        own = tuple(config.listen)
        explicit = [*(config.upstream or ()), *(addr for _, addr in config.upstream_for)]
        for addr in explicit:
            if is_own(addr, own):
                host, port = addr
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise ConfigError(f"upstream {shown} is dnsd's own listen address: "
                                  "forwarding to it would loop")
        defaults = config.upstream
        if defaults is None:
            defaults = default_upstreams(_read_text(resolv_conf), own)
            if not defaults:
                log.warning("no upstream in %s: names outside the zone get REFUSED",
                            resolv_conf)
        self.upstreams: dict[HostPort, Upstream] = {}
        per_domain: dict[bytes, list[Upstream]] = {}
        for domain, addr in config.upstream_for:
            per_domain.setdefault(_wire_key(domain), []).append(self._upstream(addr))
        self.routes = Routes([self._upstream(a) for a in defaults],
                             {k: tuple(v) for k, v in per_domain.items()})
        self._inflight: dict[tuple[CacheKey, bool], asyncio.Task[Entry | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def _upstream(self, addr: HostPort) -> Upstream:
        found = self.upstreams.get(addr)
        if found is None:
            found = self.upstreams[addr] = Upstream(addr)
        return found

    @property
    def enabled(self) -> bool:
        return bool(self.routes.default or self.routes.per_domain)

    async def start(self) -> None:
        """Log where names go. Probes start on demand, when an upstream goes down."""
        if self.routes.default:
            log.info("forwarding to %s (%s)", ", ".join(map(str, self.routes.default)),
                     self.policy)
        for key, ups in self.routes.per_domain.items():
            log.info("forwarding %s to %s", name_text(key), ", ".join(map(str, ups)))

    async def close(self) -> None:
        """Cancel every task this forwarder started and wait for them."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()

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
            return error_reply(query, REFUSED)
        upstreams = self.routes.lookup(query.key)
        if not upstreams:
            self.stats.refused += 1
            return error_reply(query, REFUSED)
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
            task = self._spawn(self._resolve(key, question, upstreams, over_tcp))
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
        return error_reply(query, SERVFAIL)

    def _stale(self, query: Query, key: CacheKey, limit: int) -> bytes | None:
        now = self.now()
        entry = self.cache.get_stale(key, now)
        if entry is None:
            return None
        self.stats.stale_served += 1
        ttls = entry.served_ttls(now, self.settings.cache.stale_ttl)
        return render(query, entry.reply, ttls, limit=limit)

    def _in_own_zone(self, key: bytes) -> bool:
        return any(suffix in self.own_zones for suffix in _suffixes(key))

    # --- upstream tries -----------------------------------------------------------

    def order(self, upstreams: Sequence[Upstream]) -> list[Upstream]:
        """The upstreams to try, in order: the healthy ones (shuffled under the
        ``random`` policy); when all are down, just one of them, since it may be
        back before its probe notices."""
        healthy = [u for u in upstreams if not u.down]
        if self.policy == "random":
            healthy = self.rng.sample(healthy, len(healthy))
        if healthy:
            return healthy
        if self.policy == "random":
            return [self.rng.choice(list(upstreams))]
        return [upstreams[0]]

    async def _resolve(self, key: CacheKey, question: bytes, upstreams: Sequence[Upstream],
                       over_tcp: bool) -> Entry | None:
        """Ask the upstreams in order until one answers; cache what may be cached."""
        self.stats.forwarded += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.deadline
        _name, _qtype, _qclass, do, cd = key
        for up in self.order(upstreams):
            if deadline - loop.time() < 0.05:
                break
            up.queries += 1
            try:
                reply = await self._try(up, question, do, cd, over_tcp, deadline)
            except (ExchangeError, Malformed) as exc:
                self._failed(up, str(exc))
                continue
            self._alive(up)
            if reply.rcode not in (NOERROR, NXDOMAIN):
                # The upstream is alive but could not answer: ask the next one.
                up.failures += 1
                self.stats.upstream_failures += 1
                log.debug("upstream %s answered rcode %d", up, reply.rcode)
                continue
            entry = make_entry(reply, self.now(), self.settings.cache)
            self.cache.put(key, entry)
            return entry
        return None

    async def _try(self, up: Upstream, question: bytes, do: bool, cd: bool, over_tcp: bool,
                   deadline: float) -> Reply:
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
                        up.addr, question, do=do, cd=cd, edns=edns,
                        timeout=min(self.settings.tcp_timeout, left))
                else:
                    wire = await self.exchanger.udp(
                        up.addr, question, do=do, cd=cd, edns=edns,
                        timeout=min(self.settings.try_timeout, left))
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

    def _alive(self, up: Upstream) -> None:
        up.fails = 0
        if up.down:
            up.down = False
            log.info("upstream %s is answering again", up)
        if up.probe is not None:
            up.probe.cancel()
            up.probe = None

    def _failed(self, up: Upstream, why: str) -> None:
        up.fails += 1
        up.failures += 1
        self.stats.upstream_failures += 1
        log.debug("upstream %s failed: %s", up, why)
        if not up.down and up.fails >= self.settings.max_fails:
            up.down = True
            log.warning("upstream %s is down after %d failures (%s); probing it", up,
                        up.fails, why)
        if up.down and up.probe is None and not self._closed:
            up.probe = self._spawn(self._probe(up))

    async def _probe(self, up: Upstream) -> None:
        """Ask a down upstream ". NS" until any well-formed reply comes back."""
        try:
            while up.down:
                await asyncio.sleep(self.settings.probe_interval)
                try:
                    await self.exchanger.udp(up.addr, PROBE_QUESTION, do=False, cd=False,
                                             timeout=self.settings.try_timeout)
                except ExchangeError:
                    continue
                up.probe = None  # _alive must not cancel the task it runs in
                self._alive(up)
        finally:
            if up.probe is asyncio.current_task():
                up.probe = None


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return ""
