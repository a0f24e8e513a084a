"""Plain counters the hot path updates; ``metrics`` reads them at scrape time.

Kept free of prometheus-client so that counting a query costs one dict update,
not a labelled-metric lookup with a lock. Call on the event loop thread only.
Imports: the standard library only.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Seconds; answers from memory land in the first buckets, forwarded ones later.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class QueryStats:
    """What the handler saw: replies by (qtype, rcode, transport), drops, latency."""

    replies: dict[tuple[int, int, str], int] = field(default_factory=dict)
    dropped: int = 0
    rate_limited: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    propagation_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    propagation_sum: float = 0.0

    def count(self, qtype: int, rcode: int, transport: str, n: int = 1) -> None:
        key = (qtype, rcode, transport)
        self.replies[key] = self.replies.get(key, 0) + n

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def observe_propagation(self, seconds: float) -> None:
        """A registry change became answerable ``seconds`` after its source saw it."""
        self.propagation_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.propagation_sum += seconds
