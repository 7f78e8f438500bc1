"""SEGMENT_ENTERED flows: people enter when they start matching a saved segment (its conditions on fields,
attributes, lists and engagement).

Evaluation is incremental. The flow keeps who matched when it last looked (``flow_segment_members``); the
first look after publishing only records the current members, so nobody already inside "enters". Every
``EVALUATE_EVERY`` the candidates are only the people something happened to since then: a subscriber row or a
subscription changed (read through their ``(workspace_id, updated_at)`` indexes, looking ``OVERLAP`` further
back so that a transaction committed a little after its timestamp is still seen) or a new event (opens,
clicks, custom events: event ids past the last one seen). Candidates who match and were not members enter;
members who no longer match leave the membership (and enter again when they match again).

A condition that changes with the clock alone ("opened within 7 days") is not an event: a full pass once a
day (``RECONCILE_EVERY``) catches what such conditions and very late commits changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, delete, func, literal, not_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, upsert
from emailkit.db.tables.audience import Segment, Subscriber, SubscriberStatus, Subscription
from emailkit.db.tables.automation import Flow, FlowSegmentMember
from emailkit.db.tables.feedback import Event
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.validate import parse_filter
from emailkit.domain.automation import entry

EVALUATE_EVERY = timedelta(seconds=15)
OVERLAP = timedelta(minutes=2)
RECONCILE_EVERY = timedelta(days=1)


def due_for_evaluation(flow: Flow, now: datetime) -> bool:
    looked = (flow.trigger_state or {}).get("looked_at")
    return looked is None or now - datetime.fromisoformat(looked) >= EVALUATE_EVERY


async def evaluate(
    session: AsyncSession, target: entry.Target, flow: Flow, now: datetime
) -> tuple[int, dict[str, Any]]:
    """Look again; returns how many people entered, and the flow's trigger state to keep."""
    segment = await session.get(Segment, target.definition.trigger.segment_id)
    if segment is None:
        return 0, dict(flow.trigger_state or {})  # deleted since: nobody can start matching it
    match = compile_filter(parse_filter(segment.filter), dialect_of(session), now=now)
    state = dict(flow.trigger_state or {})
    last_event = int((await session.scalar(select(func.max(Event.id)))) or 0)
    members = select(FlowSegmentMember.subscriber_id).where(FlowSegmentMember.flow_id == flow.id)
    if "looked_at" not in state:
        await _add_members(session, flow, select(Subscriber.id).where(match))
        return 0, _state(state, now, last_event, reconciled=True)
    reconcile = now - datetime.fromisoformat(state["reconciled_at"]) >= RECONCILE_EVERY
    candidates: Any = None if reconcile else _candidates(state, last_event)
    scope = [Subscriber.id.in_(candidates)] if candidates is not None else []
    newcomers = [
        int(x)
        for x in (
            await session.execute(
                select(Subscriber.id).where(
                    *scope,
                    match,
                    Subscriber.status == SubscriberStatus.ENABLED,
                    Subscriber.id.not_in(members),
                )
            )
        ).scalars()
    ]
    leaving = select(Subscriber.id).where(*scope, Subscriber.id.in_(members), not_(match))
    await session.execute(
        delete(FlowSegmentMember)
        .where(FlowSegmentMember.flow_id == flow.id, FlowSegmentMember.subscriber_id.in_(leaving))
        .execution_options(synchronize_session=False)
    )
    entered = 0
    if newcomers:
        await _add_members(session, flow, select(Subscriber.id).where(Subscriber.id.in_(newcomers)))
        entered = await entry.enter_people(
            session, target, newcomers, occurrence=f"segment:{now.isoformat()}"
        )
    return entered, _state(state, now, last_event, reconciled=reconcile)


def _candidates(state: dict[str, Any], last_event: int) -> Any:
    since = datetime.fromisoformat(state["looked_at"]) - OVERLAP
    changed = select(Subscriber.id).where(Subscriber.updated_at >= since)
    subscribed = select(Subscription.subscriber_id).where(Subscription.updated_at >= since)
    engaged = select(Event.subscriber_id).where(
        and_(
            Event.id > int(state.get("event_id", 0)), Event.id <= last_event, Event.subscriber_id.is_not(None)
        )
    )
    return union(changed, subscribed, engaged)


async def _add_members(session: AsyncSession, flow: Flow, people: Any) -> None:
    source = people.add_columns(literal(flow.id, BigInteger()), literal(flow.workspace_id, BigInteger()))
    stmt = (
        upsert(session)(FlowSegmentMember.__table__)
        .from_select(["subscriber_id", "flow_id", "workspace_id"], source)
        .on_conflict_do_nothing()
    )
    await session.execute(stmt)


def _state(state: dict[str, Any], now: datetime, last_event: int, *, reconciled: bool) -> dict[str, Any]:
    out = {**state, "looked_at": now.isoformat(), "event_id": last_event}
    if reconciled:
        out["reconciled_at"] = now.isoformat()
    return out
