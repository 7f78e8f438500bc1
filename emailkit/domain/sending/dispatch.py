"""Commit, then enqueue: the one way sending work reaches the job queue.

A queue message only says where to look (a batch id, a delivery id); the rows it points to must be committed
before a worker can read them, so nothing is enqueued from inside a transaction. Every caller (the API's
start, resume, retry, transactional and opt-in mutations, the public subscribe form, the scheduler's ticker
and a batch given back to run later) goes through :func:`commit_then_enqueue`: the work runs in one
transaction, run again when the database refuses it for a concurrent change, and its jobs are enqueued once,
after the one run that committed.

A message lost after the commit (the queue was down, the process died) is harmless: the ticker finds batches
and transactional deliveries nobody picked up and enqueues them again (see ``scheduler``). So an unreachable
queue does not undo or hide the commit: :class:`Dispatched` carries the committed value together with the
queue's error, and each caller decides what to tell (a warning, an error, a 503).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import CampaignBatch
from emailkit.db.types import utcnow
from emailkit.domain.ports.queue import QueueUnavailable
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.transactions import run_in_transaction

SEND_BATCH_JOB = "send_campaign_batch"
SEND_TRANSACTIONAL_JOB = "send_transactional_message"

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True)
class Dispatched(Generic[R_co]):
    """What committed work returned, the jobs it planned, and why they are not queued if they are not."""

    value: R_co
    jobs: Jobs
    # The queue was unreachable after the commit: the work is saved, and the ticker enqueues its jobs later.
    queue_error: QueueUnavailable | None = None

    def or_raise(self) -> R_co:
        """The value; or, for a caller that answers an unreachable queue with an error, the queue's error."""
        if self.queue_error is not None:
            raise self.queue_error
        return self.value


async def _enqueue(runtime: Runtime, jobs: Jobs) -> None:
    # Nothing where this process runs no jobs.
    if runtime.jobs is None:
        return
    for batch_id in jobs.batch_ids:
        await runtime.jobs.enqueue(SEND_BATCH_JOB, {"batch_id": batch_id}, delay=jobs.delay)
    for delivery_id in jobs.transactional_ids:
        await runtime.jobs.enqueue(SEND_TRANSACTIONAL_JOB, {"delivery_id": delivery_id})


async def commit_then_enqueue(
    runtime: Runtime, work: Callable[[AsyncSession], Awaitable[tuple[R, Jobs]]]
) -> Dispatched[R]:
    """Run `work` in one transaction (again on a fresh one when the database refused it for a concurrent
    change, see ``transactions``) and, once it has committed, enqueue the jobs it planned.

    Nothing is enqueued when `work` raises (its transaction is rolled back, and a DomainError, or
    ConcurrentChange once the reruns are spent, reaches the caller), nor for a run that was refused: only the
    committed run's jobs are enqueued, once. A queue that cannot be reached is reported in the result, not
    raised, since the work is committed by then.
    """
    value, jobs = await run_in_transaction(runtime.db, work)
    try:
        await _enqueue(runtime, jobs)
    except QueueUnavailable as exc:
        return Dispatched(value, jobs, queue_error=exc)
    return Dispatched(value, jobs)


async def run_batch_again(runtime: Runtime, batch_id: int, *, delay: float) -> None:
    """Enqueue a batch given back with recipients to retry, to run after `delay` seconds; its ``enqueued_at``
    moves to when it is due, so the ticker does not take the wait (hours, for a workspace's daily quota) for a
    lost message. Raises QueueUnavailable when the queue cannot be reached; the ticker enqueues the batch again
    later."""

    async def touch(session: AsyncSession) -> tuple[None, Jobs]:
        due = utcnow() + timedelta(seconds=delay)
        await session.execute(
            update(CampaignBatch).where(CampaignBatch.id == batch_id).values(enqueued_at=due)
        )
        return None, Jobs(batch_ids=[batch_id], delay=delay)

    (await commit_then_enqueue(runtime, touch)).or_raise()
