"""Emission: an event becomes one outbox row per subscribed endpoint, in the caller's transaction.

Written with the change that caused it, a message exists exactly when the change committed: nothing is lost
between a commit and a queue, and nothing is sent for a change that rolled back. The delivery job finds it
afterwards (see ``dispatch``).

Hot paths (every send, every open) call this whether or not anyone listens, so the question "does an enabled
endpoint of this workspace take this type?" is answered from a per-process cache, refreshed at most every
``MAX_AGE_SECONDS`` per workspace and dropped at once by any endpoint change made in this process. Another process
sees a new or changed endpoint within ``MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.webhooks_out import (
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookMessage,
    WebhookMessageStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.webhooks_out.events import SUBSCRIBABLE, envelope, new_event_id

MAX_AGE_SECONDS: Final = 5.0

NOBODY: Final[tuple[int, ...]] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one workspace, before it knows who receives it."""

    type: str
    data: Mapping[str, Any]
    workspace_id: int
    ordering_key: str | None = None
    occurred_at: datetime | None = None


@dataclass
class _Listeners:
    loaded_at: float
    by_type: dict[str, tuple[int, ...]]


@dataclass
class Subscriptions:
    """Per process: the enabled endpoints of each workspace by event type, each workspace's answer at most
    ``max_age`` seconds old."""

    max_age: float = MAX_AGE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _entries: dict[int, _Listeners] = field(default_factory=dict)
    # Bumped by every invalidation, so a load that raced one does not store what it read before it.
    _generation: int = 0

    def cached(self, workspace_id: int) -> dict[str, tuple[int, ...]] | None:
        entry = self._entries.get(workspace_id)
        if entry is None or self.clock() - entry.loaded_at > self.max_age:
            return None
        return entry.by_type

    async def listeners(self, session: AsyncSession, workspace_id: int) -> dict[str, tuple[int, ...]]:
        by_type = self.cached(workspace_id)
        if by_type is not None:
            return by_type
        generation = self._generation
        rows = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.workspace_id == workspace_id,
                WebhookEndpoint.status == WebhookEndpointStatus.ENABLED,
            )
        )
        found: dict[str, list[int]] = {}
        for endpoint_id, types in rows.all():
            for name in types or ():
                found.setdefault(name, []).append(int(endpoint_id))
        by_type = {name: tuple(sorted(ids)) for name, ids in found.items()}
        if generation == self._generation:
            self._entries[workspace_id] = _Listeners(self.clock(), by_type)
        return by_type

    def invalidate(self, workspace_id: int | None = None) -> None:
        """Forget a workspace's answer (every workspace's with None): call it after an endpoint change."""
        self._generation += 1
        if workspace_id is None:
            self._entries.clear()
        else:
            self._entries.pop(workspace_id, None)


# The process's cache; endpoints.py invalidates it, tests may replace its clock.
subscriptions = Subscriptions()


async def endpoints_for(session: AsyncSession, workspace_id: int, type_name: str) -> tuple[int, ...]:
    """The enabled endpoints of the workspace that take `type_name` (usually from the cache)."""
    by_type = subscriptions.cached(workspace_id)
    if by_type is None:
        by_type = await subscriptions.listeners(session, workspace_id)
    return by_type.get(type_name, NOBODY)


async def wanted_in(db: Database, workspace_id: int, type_name: str) -> bool:
    """Whether an enabled endpoint of the workspace takes `type_name`, for code that holds no session (a path
    writing through a raw driver connection can decide by it to take its session-based path instead)."""
    by_type = subscriptions.cached(workspace_id)
    if by_type is None:
        async with db.read_session() as session:
            by_type = await subscriptions.listeners(session, workspace_id)
    return bool(by_type.get(type_name))


async def emit(
    session: AsyncSession,
    type: str,
    data: Mapping[str, Any],
    *,
    workspace_id: int,
    ordering_key: str | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Write the event for every enabled endpoint of the workspace that takes it; returns the messages written
    (0, and no statement at all, when nobody listens)."""
    return await emit_many(session, [Event(type, data, workspace_id, ordering_key, occurred_at)])


async def emit_many(session: AsyncSession, events: Iterable[Event]) -> int:
    """`emit` for many events, in one INSERT; events nobody listens to cost a dictionary lookup each."""
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for event in events:
        if event.type not in SUBSCRIBABLE:
            raise ValueError(f"unknown webhook event type {event.type!r}")
        endpoint_ids = await endpoints_for(session, event.workspace_id, event.type)
        if not endpoint_ids:
            continue
        event_id = new_event_id()
        body = envelope(
            event_id,
            event.type,
            event.data,
            workspace_id=event.workspace_id,
            occurred_at=event.occurred_at or now,
        )
        for endpoint_id in endpoint_ids:
            rows.append(
                {
                    "workspace_id": event.workspace_id,
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": event.type,
                    "ordering_key": event.ordering_key,
                    "payload": body,
                    "status": WebhookMessageStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    if rows:
        await session.execute(insert(WebhookMessage), rows)
    return len(rows)
