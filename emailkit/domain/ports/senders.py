"""What the domain needs to turn a sender row into something that sends: a provider builder and a rate limiter.

Composition roots pass ``emailkit.providers.senders.SenderProviderFactory`` and a limiter factory over Redis
(``emailkit.tasks.ratelimit``); the domain never imports either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from emailkit.domain.ports.provider import EmailProvider
from emailkit.domain.ports.ratelimit import RateLimiter


class ProviderFactory(Protocol):
    def __call__(
        self, type: str, settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
    ) -> EmailProvider:
        """A provider for the sender (not connected yet); raises SenderConfigError naming the bad key."""
        ...


#: ``limiter_for(key, per_second)``: a limit of `per_second` messages shared by every process asking for `key`.
LimiterFactory = Callable[[str, float], RateLimiter]
