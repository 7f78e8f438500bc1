"""The in-process send-rate limiter, on a simulated clock (deterministic, no real waiting)."""

from __future__ import annotations

from emailkit.domain.sending.ratelimit import LocalRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_per_second_budget_spreads_sends_over_time() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(10, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(30):
        await limiter.acquire(1)
    # The first 10 go at once (a full bucket), the next 20 need two more seconds of refill.
    assert abs(clock.now - start - 2.0) < 1e-9


async def test_a_request_larger_than_the_bucket_goes_into_debt_instead_of_waiting_forever() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(5, clock=clock, sleep=clock.sleep)
    await limiter.acquire(50)
    assert clock.now == 1000.0  # the bucket was full
    await limiter.acquire(1)
    # 45 messages of debt plus this one: 9.2 seconds at 5/s.
    assert abs(clock.now - 1000.0 - 9.2) < 1e-6


async def test_hourly_window() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(None, 100, clock=clock, sleep=clock.sleep)
    await limiter.acquire(60)
    clock.now += 600
    await limiter.acquire(40)
    assert clock.slept == []
    await limiter.acquire(1)
    # Waits until the first 60 leave the one-hour window.
    assert clock.slept == [3000.0]


async def test_no_limits_never_waits() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(None, None, clock=clock, sleep=clock.sleep)
    await limiter.acquire(10_000)
    assert clock.slept == []
