"""The answer cache for forwarded names: which upstream replies may be kept, for
how long, the TTLs to serve as they count down, a size bound with LRU eviction,
and the stale entries kept for serve-stale (RFC 8767).

Policy, in one place:
- NOERROR with answers: kept for the smallest TTL of its records (OPT excluded),
  capped at ``max_ttl``; a zero TTL means "do not cache" (RFC 1035 3.2.1).
- NXDOMAIN, and NOERROR without answers (NODATA): kept for
  min(SOA TTL, SOA MINIMUM), capped at ``max_negative_ttl`` (RFC 2308 5); without
  an SOA in the authority section they are not kept (RFC 2308 5, "SHOULD NOT").
- Anything else (SERVFAIL, REFUSED, truncated replies): never kept.
- Served TTLs are each record's TTL minus the whole seconds the entry has aged.
- An expired entry stays ``stale_window`` seconds more; when upstreams fail it is
  served with every TTL set to ``stale_ttl`` (RFC 8767 4 suggests 30 s).

Time is injected (``now``) by the caller on every call; nothing here reads a clock.
Imports: ``records``, ``forward.exchange`` (the parsed reply), ``wire``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from dnsd.forward.exchange import ANSWER, AUTHORITY, Reply
from dnsd.records import T_SOA
from dnsd.wire import NOERROR, NXDOMAIN

# (lower-cased wire name, qtype, qclass, DO bit, CD bit). CD is in the key as well
# because a CD=1 answer may hold data a validating upstream would have refused.
CacheKey = tuple[bytes, int, int, bool, bool]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    max_entries: int = 10_000
    max_bytes: int = 32 * 1024 * 1024
    max_ttl: int = 3600            # as CoreDNS cache: keep answers at most an hour
    max_negative_ttl: int = 1800   # RFC 2308 5 suggests 1-3 hours at most; be fresher
    stale_window: int = 86_400     # RFC 8767 5: 1 to 3 days "max-stale-ttl"
    stale_ttl: int = 30            # RFC 8767 4


@dataclass(frozen=True, slots=True)
class Entry:
    """One upstream reply with the TTLs to serve for each record and how long
    it may be served fresh (``lifetime`` 0: use it once, do not keep it)."""

    reply: Reply
    ttls: tuple[int, ...]
    lifetime: int
    stored_at: float

    @property
    def size(self) -> int:
        return len(self.reply.wire) + 64 + 8 * len(self.ttls)

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.lifetime

    def served_ttls(self, now: float, stale_ttl: int) -> tuple[int, ...]:
        """The TTLs to put in an answer served at ``now``: counted down while
        fresh, ``stale_ttl`` once expired (the entry is being served stale)."""
        age = self.age(now)
        if age >= self.lifetime and self.lifetime > 0:
            return (stale_ttl,) * len(self.ttls)
        elapsed = int(age)
        return tuple(max(0, ttl - elapsed) for ttl in self.ttls)


def make_entry(reply: Reply, now: float, policy: CachePolicy) -> Entry:
    """The entry for ``reply`` with the TTLs and lifetime the module policy gives."""
    rcode = reply.rcode
    has_answer = any(r.section == ANSWER for r in reply.records)
    negative = rcode == NXDOMAIN or (rcode == NOERROR and not has_answer)
    soa_ttl: int | None = None
    if negative:
        for r in reply.records:
            if r.section == AUTHORITY and r.rtype == T_SOA and r.soa_minimum is not None:
                soa_ttl = min(r.ttl, r.soa_minimum, policy.max_negative_ttl)
                break
    ttls = tuple(
        soa_ttl if (soa_ttl is not None and r.rtype == T_SOA and r.section == AUTHORITY)
        else min(r.ttl, policy.max_ttl)
        for r in reply.records)
    lifetime = 0
    if rcode in (NOERROR, NXDOMAIN) and not reply.truncated:
        if negative:
            lifetime = soa_ttl if soa_ttl is not None else 0
            lifetime = min([lifetime, *ttls])
        elif ttls:
            lifetime = min(ttls)
    return Entry(reply, ttls, lifetime, now)


class Cache:
    """Bounded LRU of :class:`Entry` by :data:`CacheKey`. Use on one event loop."""

    def __init__(self, policy: CachePolicy | None = None) -> None:
        self.policy = policy or CachePolicy()
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float) -> Entry | None:
        """The fresh entry for ``key``, or None (an expired one stays for stale use)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh(now):
            self._entries.move_to_end(key)
            return entry
        if entry.age(now) >= entry.lifetime + self.policy.stale_window:
            self._drop(key)
        return None

    def get_stale(self, key: CacheKey, now: float) -> Entry | None:
        """An expired entry still inside the stale window (RFC 8767), or None."""
        entry = self._entries.get(key)
        if entry is None or entry.fresh(now):
            return None
        if entry.age(now) >= entry.lifetime + self.policy.stale_window:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: Entry) -> bool:
        """Keep ``entry`` if it may be kept; evict least recently used entries
        past the bounds. Returns whether it was kept."""
        if entry.lifetime <= 0 or entry.size > self.policy.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.policy.max_entries or self.bytes > self.policy.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
