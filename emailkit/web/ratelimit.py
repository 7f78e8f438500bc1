"""Request rate limits of the HTTP edge, kept by the `limits` library: in Redis when one is configured (so
every API process shares one budget), in process memory otherwise.

:class:`ApiRateLimiter` is the per-API-key limit (EMAILKIT_API_RATE_LIMIT) of ``/graphql`` (HTTP and each
operation over WebSocket) and ``/export``. It uses a moving window: exact, and its reset time is when the
oldest counted request leaves the window, which is the honest ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from emailkit.settings import Settings

log = logging.getLogger(__name__)

# How often a limiter that cannot reach its storage says so (it lets requests through meanwhile).
_WARN_EVERY_SECONDS = 60.0


def limits_storage(settings: Settings) -> Storage:
    redis_url = settings.resolved_redis_url
    if redis_url:
        return RedisStorage(f"async+{redis_url}", implementation="redispy")
    return MemoryStorage()


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests for this API key; retry in {retry_after} s")
        self.retry_after = retry_after


class ApiRateLimiter:
    def __init__(
        self, storage: Storage, limits: list[RateLimitItem], *, namespace: str = "emailkit-api"
    ) -> None:
        self.strategy = MovingWindowRateLimiter(storage)
        self.limits = limits
        self.namespace = namespace
        self._warned_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiRateLimiter | None:
        if not settings.api_rate_limit.strip():
            return None
        return cls(limits_storage(settings), parse_many(settings.api_rate_limit))

    async def check(self, key_id: int) -> None:
        """Count one request of the key; raise :class:`RateLimited` (with whole seconds to wait) when over.

        A storage that cannot be reached lets requests through: the limit protects the API, and an
        unreachable Redis must not take the whole API down with it.
        """
        ident = str(key_id)
        try:
            for item in self.limits:
                if not await self.strategy.hit(item, self.namespace, ident):
                    stats = await self.strategy.get_window_stats(item, self.namespace, ident)
                    raise RateLimited(max(1, math.ceil(stats.reset_time - time.time())))
        except RateLimited:
            raise
        except Exception:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning("API rate limit storage unreachable; requests are not limited", exc_info=True)
