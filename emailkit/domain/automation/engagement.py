"""Opens and clicks, as automation sees them (called by the feedback loop in its recording transaction): the
first open and first click of a flow SEND's message mark its ledger row (the step's unique counts, and what a
BRANCH on "opened the email of step K" reads), and opens and clicks of campaigns start ENGAGED flows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.automation import FlowStepRun
from emailkit.db.tables.feedback import EventType
from emailkit.domain.automation import entry
from emailkit.domain.automation.counters import Tally


async def engagement_recorded(
    session: AsyncSession,
    events: Sequence[tuple[int, EventType, int | None, int | None, int | None, str | None, str]],
    now: datetime,
) -> None:
    """`events`: (workspace, type, delivery, campaign, subscriber, url, occurrence key) of new opens and clicks."""
    flow_deliveries = {
        kind: sorted({d for _, t, d, c, _, _, _ in events if d is not None and c is None and t in kinds})
        for kind, kinds in (("opened", (EventType.OPEN, EventType.CLICK)), ("clicked", (EventType.CLICK,)))
    }
    for kind, ids in flow_deliveries.items():
        if ids:
            await _mark(session, ids, kind, now)  # type: ignore[arg-type]
    by_workspace: dict[int, list[entry.Engagement]] = defaultdict(list)
    for workspace, t, _, campaign, subscriber, url, key in events:
        if campaign is not None and subscriber is not None:
            by_workspace[workspace].append(
                entry.Engagement(subscriber, campaign, url if t is EventType.CLICK else None, key)
            )
    for workspace, engagements in sorted(by_workspace.items()):
        await entry.engaged(session, workspace, engagements)


async def _mark(
    session: AsyncSession, delivery_ids: list[int], kind: Literal["opened", "clicked"], now: datetime
) -> None:
    column = FlowStepRun.opened_at if kind == "opened" else FlowStepRun.clicked_at
    marked = await session.execute(
        update(FlowStepRun)
        .where(FlowStepRun.delivery_id.in_(delivery_ids), column.is_(None))
        .values({column.key: now})
        .returning(FlowStepRun.workspace_id, FlowStepRun.flow_id, FlowStepRun.step_key)
        .execution_options(synchronize_session=False)
    )
    tallies: dict[int, Tally] = defaultdict(Tally)
    for workspace, flow_id, key in marked.all():
        tallies[int(workspace)].step(int(flow_id), key, kind)
    for workspace, tally in tallies.items():
        await tally.write(session, workspace)
