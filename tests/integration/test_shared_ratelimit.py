"""Send-rate limits shared through Redis: two workers draw from one budget (collected only with Redis)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from emailkit.tasks.ratelimit import SharedRateLimiter
from tests.conftest import REDIS_URL

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
