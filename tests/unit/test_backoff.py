"""The one backoff every source and the source supervisor wait with."""

from __future__ import annotations

import random

from dnsd.sources.backoff import Backoff


def test_backoff_grows_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(base=0.25, cap=4.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(10)]
    ceilings = [min(4.0, 0.25 * 2 ** n) for n in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 4.0
    assert len(set(delays)) == len(delays)  # jittered: no two equal
    backoff.reset()
    assert backoff.next() <= 0.25


def test_backoff_survives_very_many_attempts() -> None:
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(1))
    backoff.attempts = 10_000  # a registry down for days: no overflow
    assert 30.0 <= backoff.next() <= 60.0
