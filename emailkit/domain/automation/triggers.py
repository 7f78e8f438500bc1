"""The triggers the ticker evaluates (the others enter people in the transaction that made the occurrence,
see ``entry``): anniversaries of a date attribute, and people who start matching a segment."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.automation import Flow, FlowStatus, FlowTriggerType
from emailkit.domain.automation import date_trigger, entry, segment_trigger
from emailkit.domain.automation.versions import definitions

log = logging.getLogger(__name__)

WATCHED = (FlowTriggerType.DATE_ATTRIBUTE, FlowTriggerType.SEGMENT_ENTERED)


async def evaluate_due(db: Database, now: datetime, default_zone: str) -> int:
    """Evaluate each watched flow whose turn it is, each in its own workspace and transaction; returns how
    many people entered. The caller holds the all-workspaces scope."""
    async with db.read_session() as s:
        rows = (
            await s.execute(
                select(Flow.id, Flow.workspace_id).where(
                    Flow.status == FlowStatus.ACTIVE,
                    Flow.trigger_type.in_(WATCHED),
                    Flow.version_id.is_not(None),
                )
            )
        ).all()
    entered = 0
    for flow_id, workspace_id in rows:
        with workspace_scope(int(workspace_id)):
            try:
                entered += await _evaluate(db, int(flow_id), now, default_zone)
            except Exception:
                # One flow's failure (a segment that no longer compiles) must not stop the others.
                log.exception("flow %s: trigger evaluation failed", flow_id)
    return entered


async def _evaluate(db: Database, flow_id: int, now: datetime, default_zone: str) -> int:
    async with db.transaction() as s:
        flow = (
            await s.execute(select(Flow).where(Flow.id == flow_id).with_for_update())
        ).scalar_one_or_none()
        if flow is None or flow.status is not FlowStatus.ACTIVE or flow.version_id is None:
            return 0
        parsed = (await definitions(s, [flow.version_id])).get(flow.version_id)
        if parsed is None:
            return 0
        target = entry.Target(flow.id, flow.workspace_id, flow.version_id, parsed)
        if flow.trigger_type is FlowTriggerType.DATE_ATTRIBUTE and date_trigger.due_for_scan(flow, now):
            entered, state = await date_trigger.scan(s, target, flow, now, default_zone)
        elif flow.trigger_type is FlowTriggerType.SEGMENT_ENTERED and segment_trigger.due_for_evaluation(
            flow, now
        ):
            entered, state = await segment_trigger.evaluate(s, target, flow, now)
        else:
            return 0
        # Where the trigger has got to is upkeep, not an edit: the flow's updatedAt stays.
        await s.execute(
            update(Flow).where(Flow.id == flow.id).values(trigger_state=state, updated_at=Flow.updated_at)
        )
        return entered
