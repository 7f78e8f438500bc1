"""Commit, then enqueue: the one way sending work reaches the job queue.

A queue message only says where to look (a batch id, a delivery id); the rows it points to must be committed
before a worker can read them, so nothing is enqueued from inside a transaction. A message lost after the
commit (the queue was down, the process died) is harmless: the ticker finds batches and transactional
deliveries nobody picked up and enqueues them again (see ``scheduler``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import CampaignBatch
from emailkit.db.types import utcnow
from emailkit.domain.runtime import Runtime

SEND_BATCH_JOB = "send_campaign_batch"
SEND_TRANSACTIONAL_JOB = "send_transactional_message"

R = TypeVar("R")


@dataclass(frozen=True)
class Jobs:
    """What a transaction planned for the workers: campaign batches and transactional deliveries."""

    batch_ids: Sequence[int] = ()
    transactional_ids: Sequence[int] = ()
    # Seconds before the batches may run (a batch given back with recipients to retry later).
    delay: float | None = None


async def enqueue(runtime: Runtime, jobs: Jobs) -> None:
    """Hand work whose rows are committed to the queue (nothing where this process runs no jobs).

    Raises QueueUnavailable when the broker cannot be reached; the committed work waits for the ticker.
    """
    if runtime.jobs is None:
        return
    for batch_id in jobs.batch_ids:
        await runtime.jobs.enqueue(SEND_BATCH_JOB, {"batch_id": batch_id}, delay=jobs.delay)
    for delivery_id in jobs.transactional_ids:
        await runtime.jobs.enqueue(SEND_TRANSACTIONAL_JOB, {"delivery_id": delivery_id})


async def commit_then_enqueue(
    runtime: Runtime, work: Callable[[AsyncSession], Awaitable[tuple[R, Jobs]]]
) -> R:
    """Run `work` in one transaction and, once it has committed, enqueue the jobs it planned; returns the rest
    of what it returned. Nothing is enqueued when `work` raises (its transaction is rolled back)."""
    async with runtime.db.transaction() as session:
        value, jobs = await work(session)
    await enqueue(runtime, jobs)
    return value


async def run_batch_again(runtime: Runtime, batch_id: int, *, delay: float) -> None:
    """Enqueue a batch given back with recipients to retry, to run after `delay` seconds; its ``enqueued_at``
    moves forward so the ticker does not take the wait for a lost message."""

    async def touch(session: AsyncSession) -> tuple[None, Jobs]:
        await session.execute(
            update(CampaignBatch).where(CampaignBatch.id == batch_id).values(enqueued_at=utcnow())
        )
        return None, Jobs(batch_ids=[batch_id], delay=delay)

    await commit_then_enqueue(runtime, touch)
