"""A person erased (GDPR) or deleted leaves every flow at once, and their runs keep nothing of them: no link to
the person (the subscriber row goes, so the reference is cleared: runs hold it without a foreign key) and no
trigger event (its properties may be personal). The runs themselves stay, so the flows' totals do not change."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.automation import Flow, FlowRun, FlowRunStatus, FlowSegmentMember
from emailkit.db.types import utcnow
from emailkit.metrics import record as metrics

EXIT_ERASED = "erased"


async def person_erased(session: AsyncSession, subscriber_id: int, *, reason: str = EXIT_ERASED) -> None:
    """In the erasure's (or deletion's) transaction, before the subscriber row is deleted."""
    active = Counter(
        (
            await session.execute(
                select(FlowRun.flow_id).where(
                    FlowRun.subscriber_id == subscriber_id, FlowRun.status == FlowRunStatus.ACTIVE
                )
            )
        ).scalars()
    )
    await session.execute(
        update(FlowRun)
        .where(FlowRun.subscriber_id == subscriber_id, FlowRun.status == FlowRunStatus.ACTIVE)
        .values(status=FlowRunStatus.EXITED, exit_reason=reason, finished_at=utcnow(), due_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(FlowRun)
        .where(FlowRun.subscriber_id == subscriber_id)
        .values(context=None, subscriber_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(FlowSegmentMember)
        .where(FlowSegmentMember.subscriber_id == subscriber_id)
        .execution_options(synchronize_session=False)
    )
    metrics.flow_runs("exited", sum(active.values()))
    for flow_id, n in active.items():
        await session.execute(
            update(Flow).where(Flow.id == flow_id).values(active=Flow.active - n, exited=Flow.exited + n)
        )
