"""The ticker's part in webhook delivery: endpoints with due messages get a delivery job; old messages go.

Emission writes rows only (it runs inside other transactions, where nothing may be enqueued), so every second
the ticker looks for enabled endpoints that have a due PENDING message and that no job holds, marks them
enqueued and enqueues one job each. A job message lost with the queue is harmless: the endpoint is enqueued
again ``requeue_after_seconds`` later. A job that still has work when its budget ends is enqueued again by the
job layer at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, exists, or_, select, update

from emailkit.db.scope import all_workspaces
from emailkit.db.tables.webhooks_out import (
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookMessage,
    WebhookMessageStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.ports.queue import QueueUnavailable
from emailkit.domain.runtime import Runtime
from emailkit.domain.webhooks_out.delivery import DISABLED_ERROR

log = logging.getLogger(__name__)

DELIVER_JOB: Final = "deliver_webhooks"
# Delivered and failed messages (and their attempts) are kept this long for the delivery log.
RETENTION: Final = timedelta(days=30)
PRUNE_EVERY: Final = timedelta(hours=1)
PRUNE_BATCH: Final = 10_000


async def due_endpoints(runtime: Runtime, now: datetime) -> list[int]:
    """Endpoints (of every workspace) to enqueue now, marked enqueued in the same statement."""
    e, m = WebhookEndpoint, WebhookMessage
    stale = now - timedelta(seconds=runtime.webhooks.config.requeue_after_seconds)
    due = exists().where(
        m.endpoint_id == e.id, m.status == WebhookMessageStatus.PENDING, m.next_attempt_at <= now
    )
    with all_workspaces():
        async with runtime.db.transaction() as session:
            ids = [
                int(i)
                for i in (
                    await session.execute(
                        select(e.id)
                        .where(
                            e.status == WebhookEndpointStatus.ENABLED,
                            or_(e.lease_until.is_(None), e.lease_until < now),
                            or_(e.enqueued_at.is_(None), e.enqueued_at < stale),
                            due,
                        )
                        .order_by(e.id)
                    )
                ).scalars()
            ]
            if ids:
                await session.execute(
                    update(e)
                    .where(e.id.in_(ids))
                    .values(enqueued_at=now)
                    .execution_options(synchronize_session=False)
                )
    return ids


async def enqueue(runtime: Runtime, endpoint_id: int, *, delay: float | None = None) -> None:
    if runtime.jobs is not None:
        await runtime.jobs.enqueue(DELIVER_JOB, {"endpoint_id": endpoint_id}, delay=delay)


class WebhookUpkeep:
    """The per-tick step (enqueue endpoints with due messages) and hourly pruning, for one process."""

    def __init__(self) -> None:
        self._last_prune: datetime | None = None

    async def tick(self, runtime: Runtime, now: datetime | None = None) -> None:
        now = now or utcnow()
        if runtime.jobs is not None:
            for endpoint_id in await due_endpoints(runtime, now):
                try:
                    await enqueue(runtime, endpoint_id)
                except QueueUnavailable:
                    log.warning("webhook endpoint %s not enqueued: the queue is unreachable", endpoint_id)
                    break  # marked enqueued: tried again after requeue_after_seconds
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            pruned = await prune(runtime, now)
            if pruned:
                log.info("pruned %d old webhook messages", pruned)


async def prune(runtime: Runtime, now: datetime) -> int:
    """Delete up to PRUNE_BATCH delivered or failed messages older than RETENTION (their attempts go with them),
    and the messages an emitter wrote from a stale cache: for an endpoint deleted meanwhile (deleted) or
    disabled meanwhile (FAILED, as disabling does to the others)."""
    m, e = WebhookMessage, WebhookEndpoint
    cutoff = now - RETENTION
    with all_workspaces():
        async with runtime.db.transaction() as session:
            old = (
                select(m.id)
                .where(m.status != WebhookMessageStatus.PENDING, m.created_at < cutoff)
                .limit(PRUNE_BATCH)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(m).where(m.id.in_(old)).execution_options(synchronize_session=False)
            )
            await session.execute(
                delete(m)
                .where(~exists().where(e.id == m.endpoint_id))
                .execution_options(synchronize_session=False)
            )
            await session.execute(
                update(m)
                .where(
                    m.status == WebhookMessageStatus.PENDING,
                    exists().where(e.id == m.endpoint_id, e.status == WebhookEndpointStatus.DISABLED),
                )
                .values(status=WebhookMessageStatus.FAILED, next_attempt_at=None, error=DISABLED_ERROR)
                .execution_options(synchronize_session=False)
            )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
