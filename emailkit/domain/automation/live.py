"""Live flow stats: the channel, and pushing the counters of flows that changed."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.automation import Flow
from emailkit.domain.throttle import CoalescingPublisher


def flow_stats_channel(flow_id: int) -> str:
    return f"flow:{flow_id}:stats"


async def publish_flow_stats(
    db: Database, live: CoalescingPublisher | None, flow_ids: Collection[int]
) -> None:
    """Push the counters of these flows (read in the caller's scope), throttled per flow."""
    if live is None or not flow_ids:
        return
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Flow.id, Flow.entered, Flow.active, Flow.completed, Flow.exited).where(
                    Flow.id.in_(flow_ids)
                )
            )
        ).all()
    for row in rows:
        message: dict[str, Any] = {
            "flow_id": row.id,
            "entered": row.entered,
            "active": row.active,
            "completed": row.completed,
            "exited": row.exited,
        }
        await live.publish(flow_stats_channel(row.id), message)
