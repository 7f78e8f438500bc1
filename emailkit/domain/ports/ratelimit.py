"""The send-rate limit the pipeline awaits before each chunk: messages per second and per hour, per provider.

Implemented in process by ``emailkit.domain.sending.ratelimit.LocalRateLimiter`` and, shared by every worker, by
``emailkit.tasks.ratelimit`` over Redis.
"""

from __future__ import annotations

from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` more messages may go out without breaking any configured limit."""
        ...
