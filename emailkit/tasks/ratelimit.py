"""Send-rate limits shared by all workers on all machines, kept in Redis (through the `limits` library)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.sending.ratelimit import LocalRateLimiter
from emailkit.settings import Settings


class SharedRateLimiter:
    """Sliding-window counters per provider; every worker draws from the same budget."""

    def __init__(
        self, redis_url: str, *, per_second: float | None, per_hour: int | None, key: str = "emailkit:send"
    ) -> None:
        self._storage = RedisStorage(f"async+{redis_url}", implementation="redispy")
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._key = key
        self._items: list[RateLimitItem] = []
        if per_second:
            self._items.append(RateLimitItemPerSecond(max(1, int(per_second))))
        if per_hour:
            self._items.append(RateLimitItemPerHour(per_hour))

    async def _take(self, item: RateLimitItem, n: int) -> None:
        while not await self._strategy.hit(item, self._key, cost=n):
            stats = await self._strategy.get_window_stats(item, self._key)
            await asyncio.sleep(min(max(stats.reset_time - time.time(), 0.01), item.get_expiry()))

    async def acquire(self, n: int = 1) -> None:
        for item in self._items:
            remaining = n
            # A request bigger than the window is taken in window-sized pieces.
            while remaining > 0:
                piece = min(remaining, item.amount)
                await self._take(item, piece)
                remaining -= piece


def sender_limiter_factory(settings: Settings) -> Callable[[str, float], RateLimiter]:
    """Limits of named senders: one budget per sender in Redis (``emailkit:send:sender:<id>``), shared by all
    workers; in one process only without Redis."""
    redis_url = settings.resolved_redis_url

    def limiter_for(key: str, per_second: float) -> RateLimiter:
        if redis_url:
            return SharedRateLimiter(
                redis_url, per_second=per_second, per_hour=None, key=f"emailkit:send:{key}"
            )
        return LocalRateLimiter(per_second)

    return limiter_for


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    per_second, per_hour = settings.send_rate_per_second, settings.send_rate_per_hour
    if not per_second and not per_hour:
        return None
    redis_url = settings.resolved_redis_url
    if redis_url:
        return SharedRateLimiter(
            redis_url, per_second=per_second, per_hour=per_hour, key=f"emailkit:send:{settings.provider}"
        )
    return LocalRateLimiter(per_second, per_hour)
