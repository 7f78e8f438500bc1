"""The in-process send-rate limit: messages per second and per hour, for one process.

It implements the port the pipeline awaits (``emailkit.domain.ports.ratelimit.RateLimiter``) in the embedded
mode and in tests; the Redis one (``emailkit.tasks.ratelimit``) makes all workers on all machines share one budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class LocalRateLimiter:
    """Token bucket per second plus a sliding one-hour window, for one process."""

    def __init__(
        self,
        per_second: float | None,
        per_hour: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_second = per_second
        self.per_hour = per_hour
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(per_second or 0)
        self._stamp = clock()
        self._hour: deque[tuple[float, int]] = deque()
        self._hour_total = 0
        self._lock = asyncio.Lock()

    def _wait_for(self, n: int, now: float) -> float:
        wait = 0.0
        if self.per_second:
            self._tokens = min(float(self.per_second), self._tokens + (now - self._stamp) * self.per_second)
            self._stamp = now
            # A request larger than the bucket goes into debt rather than waiting forever.
            need = min(float(n), float(self.per_second))
            # The tolerance keeps float rounding from producing waits too small to move the clock.
            if self._tokens < need - 1e-9:
                wait = (need - self._tokens) / self.per_second
        if self.per_hour:
            while self._hour and now - self._hour[0][0] >= 3600:
                self._hour_total -= self._hour.popleft()[1]
            if self._hour_total + n > self.per_hour and self._hour:
                wait = max(wait, 3600 - (now - self._hour[0][0]), 1e-3)
        return wait

    async def acquire(self, n: int = 1) -> None:
        if n <= 0 or (not self.per_second and not self.per_hour):
            return
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._wait_for(n, now)
                if wait <= 0:
                    break
                await self._sleep(wait)
            if self.per_second:
                self._tokens -= n
            if self.per_hour:
                self._hour.append((now, n))
                self._hour_total += n
