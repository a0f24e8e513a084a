"""Capped exponential backoff with jitter: the one copy every source (and the
supervisor that restarts a crashed source) waits with.

"Equal jitter": the n-th delay is half of ``min(cap, base * 2**n)`` plus a
random part up to the other half, so retries of many clients that failed
together spread out, and no delay is ever shorter than half its ceiling.
Imports: the standard library only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays before successive retries; ``reset`` after a success.

    ``rng`` is injected so tests can pin the sequence.
    """

    base: float = 0.25
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next(self) -> float:
        """The delay before the next retry (and count the attempt)."""
        ceiling = min(self.cap, self.base * float(2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling / 2 + float(self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempts = 0
