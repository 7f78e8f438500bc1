"""Send-rate limits shared through Redis: two workers draw from one budget (collected only with Redis)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from limits import parse_many
from limits.aio.storage import RedisStorage

from emailkit.settings import Settings
from emailkit.tasks.ratelimit import SharedRateLimiter, sender_limiter_factory
from emailkit.web.ratelimit import ApiRateLimiter, RateLimited
from tests.support.environment import REDIS_URL

# tests/conftest.py collects this module only when Redis tests are wanted (CI).
CASES = ["redis"]


@pytest.mark.parametrize("backend", CASES)
async def test_two_workers_share_one_budget(backend: str) -> None:
    assert REDIS_URL is not None
    key = f"emailkit:test:{uuid.uuid4().hex}"
    worker_a = SharedRateLimiter(REDIS_URL, per_second=None, per_hour=50, key=key)
    worker_b = SharedRateLimiter(REDIS_URL, per_second=None, per_hour=50, key=key)
    await worker_a.acquire(30)
    await worker_b.acquire(20)
    # The hour's budget is spent by the two together: a third request must wait for the window.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker_b.acquire(1), timeout=0.5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker_a.acquire(1), timeout=0.5)


@pytest.mark.parametrize("backend", CASES)
async def test_requests_within_budget_pass_at_once(backend: str) -> None:
    assert REDIS_URL is not None
    key = f"emailkit:test:{uuid.uuid4().hex}"
    limiter = SharedRateLimiter(REDIS_URL, per_second=1000, per_hour=10_000, key=key)
    # Larger than the per-second window: taken in window-sized pieces without deadlock.
    await asyncio.wait_for(limiter.acquire(900), timeout=5)


@pytest.mark.parametrize("backend", CASES)
async def test_api_processes_share_each_keys_budget(backend: str) -> None:
    """Two API processes (two limiters on one Redis) draw one key's requests from one budget."""
    assert REDIS_URL is not None
    namespace = f"emailkit-test-api-{uuid.uuid4().hex}"
    first, second = (
        ApiRateLimiter(
            RedisStorage(f"async+{REDIS_URL}", implementation="redispy"),
            parse_many("3/minute"),
            namespace=namespace,
        )
        for _ in range(2)
    )
    await first.check(7)
    await second.check(7)
    await first.check(7)
    for limiter in (first, second):
        with pytest.raises(RateLimited) as refused:
            await limiter.check(7)
        assert 1 <= refused.value.retry_after <= 60
    # Another key has its own budget on both.
    await second.check(8)
    await first.check(8)


@pytest.mark.parametrize("backend", CASES)
async def test_each_sender_has_one_budget_shared_by_all_workers(backend: str) -> None:
    """A sender's ratePerSecond is one budget in Redis for every worker (two processes build two limiters for
    it), and another sender's budget is its own."""
    assert REDIS_URL is not None
    settings = Settings(redis_url=REDIS_URL)  # type: ignore[arg-type]
    sender = f"sender:{uuid.uuid4().int % 10**9}"
    other = f"sender:{uuid.uuid4().int % 10**9}"
    worker_a = sender_limiter_factory(settings)(sender, 5)
    worker_b = sender_limiter_factory(settings)(sender, 5)
    await worker_a.acquire(3)
    await worker_b.acquire(2)
    # This second's 5 are spent by the two together.
    for limiter in (worker_a, worker_b):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(limiter.acquire(1), timeout=0.05)
    await asyncio.wait_for(sender_limiter_factory(settings)(other, 5).acquire(5), timeout=5)
