"""Which provider a message goes through: the sender's, built once per process and kept while the sender's row
stays as it is, or the instance's default.

A :class:`SenderProviders` belongs to one process's sending setup, on the event loop that sends. ``use(id)``
lends the route of a sender for the length of a batch: the first use builds the provider (from the row, its
credentials unsealed) and the sender's own rate limiter, keyed by the sender so every worker shares it. Each
use reads the row once (one indexed read per batch; none at all for the default sender, whose route is the
process's provider as before). When the row has changed since (``updated_at``), a new provider replaces the
old one, which is closed once the batches still using it are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from emailkit import traces
from emailkit.db.engine import Database
from emailkit.db.tables.senders import Sender
from emailkit.domain.ports.provider import (
    CommitHook,
    EmailProvider,
    OutgoingMessage,
    ResultHook,
    SenderConfigError,
    SendResult,
)
from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.ports.senders import LimiterFactory, ProviderFactory
from emailkit.domain.sealing import SecretUnreadable
from emailkit.domain.senders.store import credentials_of
from emailkit.domain.senders.warmup import WarmupPlan, plan_of
from emailkit.metrics import record as metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderRoute:
    """A provider to send through, the name written on its deliveries, and its rate limit."""

    #: None: the instance's default sender.
    sender_id: int | None
    provider_name: str
    provider: EmailProvider
    limiter: RateLimiter | None
    #: The sender's warm-up plan, if it has one (a changed plan changes the row, so the route).
    warmup: WarmupPlan | None = None

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        """The provider's ``send_batch``, timed (the send latency metric) and in a trace span: one of each per
        request (up to a few hundred messages), never one per message."""
        attributes: dict[str, traces.AttributeValue] = {
            "emailkit.provider": self.provider_name,
            "emailkit.messages": len(messages),
        }
        with (
            traces.span(f"send {self.provider_name}", attributes, kind="client"),
            metrics.timed_send(self.provider_name),
        ):
            return await self.provider.send_batch(messages, on_commit=on_commit, on_result=on_result)


class SenderUnusable(Exception):
    """The sender's row cannot build a provider (its credentials no longer open, or it was made invalid)."""


@dataclass
class _Entry:
    route: SenderRoute
    stamp: datetime
    users: int = 0
    retired: bool = False


@dataclass
class SenderProviders:
    db: Database
    instance_secret: str
    #: The default sender's route (built lazily by the process's setup).
    default: Callable[[], SenderRoute]
    build: ProviderFactory | None = None
    limiter_for: LimiterFactory | None = None
    _entries: dict[int, _Entry] = field(default_factory=dict, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @asynccontextmanager
    async def use(self, sender_id: int | None) -> AsyncIterator[SenderRoute]:
        """The route of `sender_id` for the length of the block (the default's for None or a sender deleted
        meanwhile). Raises SenderUnusable when the sender's row cannot build a provider."""
        if sender_id is None:
            yield self.default()
            return
        entry = await self._entry(sender_id)
        if entry is None:
            log.warning("sender %s no longer exists; sending through the default sender", sender_id)
            yield self.default()
            return
        entry.users += 1
        try:
            yield entry.route
        finally:
            entry.users -= 1
            if entry.retired and entry.users == 0:
                await entry.route.provider.close()

    async def _entry(self, sender_id: int) -> _Entry | None:
        async with self.db.session() as session:
            row = await session.get(Sender, sender_id)
            if row is None:
                return None
            stamp = row.updated_at
            current = self._entries.get(sender_id)
            if current is not None and current.stamp == stamp:
                return current
            async with self._lock:
                current = self._entries.get(sender_id)
                if current is not None and current.stamp == stamp:
                    return current
                fresh = _Entry(self._build(row), stamp)
                self._entries[sender_id] = fresh
        if current is not None:
            current.retired = True
            if current.users == 0:
                await current.route.provider.close()
        return fresh

    def _build(self, row: Sender) -> SenderRoute:
        if self.build is None:
            raise SenderUnusable("this process cannot build senders' providers")
        try:
            credentials = credentials_of(row, self.instance_secret)
            provider = self.build(row.type.value, row.settings or {}, credentials, pool_size=row.pool_size)
        except SecretUnreadable:
            raise SenderUnusable(
                f"sender {row.name!r}: its credentials cannot be read (EMAILKIT_SECRET_KEY changed); "
                "set them again with updateSender"
            ) from None
        except SenderConfigError as exc:
            raise SenderUnusable(f"sender {row.name!r}: {exc}") from None
        limiter = None
        if row.rate_per_second and self.limiter_for is not None:
            limiter = self.limiter_for(f"sender:{row.id}", row.rate_per_second)
        return SenderRoute(row.id, row.type.value.lower(), provider, limiter, plan_of(row))

    async def close(self) -> None:
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await entry.route.provider.close()
