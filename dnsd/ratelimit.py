"""Response rate limiting for UDP, per client prefix (``--rate-limit QPS``).

A token bucket per /24 (IPv4) or /56 (IPv6), like BIND's RRL: a client over its
rate gets no reply, except every ``slip``-th one, which goes out truncated (TC,
no records) so a real client behind a spoofed flood falls back to TCP and still
resolves. TCP is never limited: it cannot be spoofed. Time is injected.
Imports: the standard library only.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000


class Verdict(enum.Enum):
    ALLOW = "allow"
    SLIP = "slip"    # send a truncated reply instead
    DROP = "drop"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    withheld: int = 0


class RateLimiter:
    def __init__(self, qps: float, *, burst: float | None = None, slip: int = 2,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = burst if burst is not None else max(qps, 1.0)
        self.slip = slip
        self.now = now
        self._buckets: dict[str, _Bucket] = {}
        self._prefixes: dict[str, str] = {}

    @staticmethod
    def prefix(client: str) -> str:
        try:
            ip = ipaddress.ip_address(client.split("%")[0])
        except ValueError:
            return client
        length = 24 if ip.version == 4 else 56
        return str(ipaddress.ip_network(f"{ip}/{length}", strict=False).network_address)

    def check(self, client: str) -> Verdict:
        now = self.now()
        # ipaddress is slow for a per-packet path: remember each client's prefix.
        key = self._prefixes.get(client)
        if key is None:
            if len(self._prefixes) >= MAX_BUCKETS:
                self._prefixes.clear()
            key = self._prefixes[client] = self.prefix(client)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.qps)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.ALLOW
        bucket.withheld += 1
        if self.slip and bucket.withheld % self.slip == 0:
            return Verdict.SLIP
        return Verdict.DROP

    def _evict(self, now: float) -> None:
        """Forget buckets that have refilled (they hold no state worth keeping)."""
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.stamp) * self.qps >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # a flood of fresh prefixes: start over
            self._buckets.clear()
