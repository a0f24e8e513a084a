"""The UDP response rate limiter with an injected clock."""

from __future__ import annotations

from dnsd.ratelimit import RateLimiter, Verdict


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_allows_the_rate_then_slips_every_second_reply() -> None:
    clock = Clock()
    limiter = RateLimiter(10, now=clock)
    verdicts = [limiter.check("192.0.2.1") for _ in range(14)]
    assert verdicts[:10] == [Verdict.ALLOW] * 10
    assert verdicts[10:] == [Verdict.DROP, Verdict.SLIP, Verdict.DROP, Verdict.SLIP]
    clock.t = 0.5  # five tokens back
    assert [limiter.check("192.0.2.1") for _ in range(5)] == [Verdict.ALLOW] * 5


def test_limits_by_prefix_not_by_address() -> None:
    limiter = RateLimiter(1, now=Clock())
    assert limiter.check("192.0.2.1") is Verdict.ALLOW
    assert limiter.check("192.0.2.200") is not Verdict.ALLOW  # same /24
    assert limiter.check("192.0.3.1") is Verdict.ALLOW
    assert limiter.check("2001:db8:0:1::1") is Verdict.ALLOW
    assert limiter.check("2001:db8:0:2::1") is not Verdict.ALLOW  # same /56


def test_bucket_table_is_bounded() -> None:
    import dnsd.ratelimit as rl
    clock = Clock()
    limiter = RateLimiter(1, now=clock)
    for i in range(rl.MAX_BUCKETS + 10):
        limiter.check(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    assert len(limiter._buckets) <= rl.MAX_BUCKETS
