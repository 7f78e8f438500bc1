"""Live flow stats: the channel on which a flow's counters are announced, and reading them back.

Whoever changes a flow's counters (the runner, archiving) announces it after the commit with
:func:`publish_flow_stats`. The message names the flow and nothing more: each ``flowStats`` subscription reads
the counters back from the database. Unlike a campaign's, a flow's counters also go down (``active``), so a
message carrying values could be overtaken by an older one with no way to tell; a value read after the
announcement is always the current one. The publisher coalesces a burst into a few messages per second per flow.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.automation import Flow, FlowStepStats
from emailkit.domain.automation.definition import parse_definition
from emailkit.domain.automation.flows import published_definition
from emailkit.domain.throttle import CoalescingPublisher

FLOW_ID = "flow_id"


def flow_stats_channel(flow_id: int) -> str:
    return f"flow:{flow_id}:stats"


@dataclass(frozen=True)
class StepCounters:
    """One step's counters (across the flow's versions: a step key keeps its meaning)."""

    key: str
    entered: int = 0
    completed: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0

    @classmethod
    def of(cls, row: FlowStepStats) -> StepCounters:
        return cls(
            key=row.step_key,
            entered=row.entered,
            completed=row.completed,
            sent=row.sent,
            skipped=row.skipped,
            failed=row.failed,
            opened=row.opened,
            clicked=row.clicked,
        )


@dataclass(frozen=True)
class FlowStatsSnapshot:
    flow_id: int
    entered: int
    active: int
    completed: int
    exited: int
    # The steps of the version people enter on (the draft's before the first publish), in their order, then
    # steps of older versions that still have counters.
    steps: tuple[StepCounters, ...]


async def flow_stats_snapshot(session: AsyncSession, flow_id: int) -> FlowStatsSnapshot | None:
    """The flow's counters as they are now; None when there is no such flow (in the caller's workspace)."""
    flow = (await session.execute(select(Flow).where(Flow.id == flow_id))).scalar_one_or_none()
    if flow is None:
        return None
    stmt = select(FlowStepStats).where(FlowStepStats.flow_id == flow_id)
    counted = {row.step_key: StepCounters.of(row) for row in (await session.execute(stmt)).scalars()}
    shown = await published_definition(session, flow) or parse_definition(flow.draft)
    keys = [s.key for s in shown.steps]
    keys += sorted(set(counted) - set(keys))
    return FlowStatsSnapshot(
        flow_id=flow.id,
        entered=flow.entered,
        active=flow.active,
        completed=flow.completed,
        exited=flow.exited,
        steps=tuple(counted.get(key) or StepCounters(key) for key in keys),
    )


async def publish_flow_stats(live: CoalescingPublisher | None, flow_ids: Collection[int]) -> None:
    """Announce that these flows' counters changed; call it after the commit that changed them."""
    if live is None:
        return
    for flow_id in sorted(set(flow_ids)):
        await live.publish(flow_stats_channel(flow_id), {FLOW_ID: flow_id})
