"""Entering flows: a trigger's occurrence becomes a run row, in the transaction that made the occurrence.

Whoever changes what a trigger watches calls in here inside its own transaction (a subscription that became
sendable, a custom event recorded, an open or a click), so the entry commits with the change or not at all:
no occurrence is lost between the two and none is seen twice. An entry is one INSERT … SELECT per flow,
whatever the number of people (an import of 100,000 enters them in one statement).

Re-entry is decided by the run's ``entry_key``, unique per (flow, person): ONCE uses '' (one run ever), ALWAYS
the occurrence's own key (the same occurrence never enters twice), AFTER_SECONDS the occurrence's key and no
run of the flow entered within that many seconds.

Nothing here is imported from automation's runner, so the audience and feedback code can call it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    and_,
    exists,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from emailkit.db.dialect import upsert
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, SubscriberStatus, Subscription
from emailkit.db.tables.audience import SubscriptionStatus as SubStatus
from emailkit.db.tables.automation import (
    Flow,
    FlowReentry,
    FlowRun,
    FlowRunStatus,
    FlowStatus,
    FlowTriggerType,
)
from emailkit.db.types import NullableJSONDoc, UTCDateTime, utcnow
from emailkit.domain.automation.definition import Definition
from emailkit.domain.automation.versions import definitions
from emailkit.domain.webhooks_out import emitters
from emailkit.metrics import record as metrics

# Entering writes the webhook events of the entries too: always through the caller's session.
Bind = AsyncSession

RUN_COLUMNS = [
    "workspace_id",
    "flow_id",
    "version_id",
    "subscriber_id",
    "status",
    "step_key",
    "visit",
    "waiting",
    "due_at",
    "entry_key",
    "context",
    "entered_at",
]


@dataclass(frozen=True)
class Target:
    """An ACTIVE flow whose trigger matched, with the version people enter on."""

    flow_id: int
    workspace_id: int
    version_id: int
    definition: Definition


async def _targets(bind: Bind, trigger: FlowTriggerType, *conditions: Any) -> list[Target]:
    stmt = select(Flow.id, Flow.workspace_id, Flow.version_id).where(
        Flow.status == FlowStatus.ACTIVE,
        Flow.trigger_type == trigger,
        Flow.version_id.is_not(None),
        *conditions,
    )
    rows = (await bind.execute(stmt)).all()
    if not rows:
        return []
    parsed = await definitions(bind, [int(r.version_id) for r in rows])
    return [
        Target(int(r.id), int(r.workspace_id), int(r.version_id), parsed[int(r.version_id)])
        for r in rows
        if int(r.version_id) in parsed
    ]


def _entry_key(target: Target, occurrence: Any) -> Any:
    if target.definition.reentry is FlowReentry.ONCE:
        return literal("", String())
    return occurrence


def _not_recent(target: Target, subscriber_id: Any, now: datetime) -> Any:
    """AFTER_SECONDS: nobody re-enters within that long of their last entry."""
    if target.definition.reentry is not FlowReentry.AFTER_SECONDS:
        return None
    since = now - timedelta(seconds=target.definition.reentry_seconds or 0)
    return ~exists().where(
        FlowRun.flow_id == target.flow_id,
        FlowRun.subscriber_id == subscriber_id,
        FlowRun.entered_at > since,
    )


async def _insert_runs(bind: Bind, target: Target, source: Select[Any]) -> int:
    stmt = (
        upsert(bind)(FlowRun.__table__)
        .from_select(RUN_COLUMNS, source)
        .on_conflict_do_nothing(index_elements=["flow_id", "subscriber_id", "entry_key"])
    )
    return await _count_entered(bind, target, stmt)


async def _count_entered(bind: Bind, target: Target, stmt: Any) -> int:
    """Run the INSERT of runs, add what it entered to the flow's counters, and tell the webhook endpoints that
    listen (only then are the new runs read back)."""
    if await emitters.wanted(bind, target.workspace_id, "flow.entered"):
        runs = (await bind.execute(stmt.returning(FlowRun.id, FlowRun.subscriber_id))).all()
        entered = len(runs)
        await emitters.flow_runs(
            bind, "flow.entered", target.workspace_id, [(target.flow_id, int(r), s) for r, s in runs]
        )
    else:
        entered = int((await bind.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
    metrics.flow_runs("active", entered)
    if entered:
        await bind.execute(
            update(Flow)
            .where(Flow.id == target.flow_id)
            .values(entered=Flow.entered + entered, active=Flow.active + entered)
        )
    return entered


def _row(
    t: Target,
    subscriber_id: int,
    key: str,
    context: dict[str, Any] | None,
    now: datetime,
    due: datetime | None,
) -> dict[str, Any]:
    """A run entering `t` at its first step, as a row of values."""
    return {
        "workspace_id": t.workspace_id,
        "flow_id": t.flow_id,
        "version_id": t.version_id,
        "subscriber_id": subscriber_id,
        "status": FlowRunStatus.ACTIVE,
        "step_key": t.definition.first.key,
        "visit": 1,
        "waiting": False,
        "due_at": due or now,
        "entry_key": "" if t.definition.reentry is FlowReentry.ONCE else key,
        "context": context,
        "entered_at": now,
    }


async def _insert_rows(bind: Bind, t: Target, rows: list[dict[str, Any]], now: datetime) -> int:
    """Insert the runs (one multi-row statement), leaving out under AFTER_SECONDS who entered recently."""
    if t.definition.reentry is FlowReentry.AFTER_SECONDS and rows:
        recent = await _recently_entered(bind, t, [r["subscriber_id"] for r in rows], now)
        rows = [r for r in rows if r["subscriber_id"] not in recent]
    if not rows:
        return 0
    stmt = (
        upsert(bind)(FlowRun.__table__)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["flow_id", "subscriber_id", "entry_key"])
    )
    return await _count_entered(bind, t, stmt)


def _run_values(
    target: Target, subscriber_id: Any, entry_key: Any, context: Any, now: datetime, due: Any = None
) -> list[Any]:
    """The columns of RUN_COLUMNS for a run entering `target` at its first step."""
    ts = literal(now, UTCDateTime())
    return [
        literal(target.workspace_id, BigInteger()),
        literal(target.flow_id, BigInteger()),
        literal(target.version_id, BigInteger()),
        subscriber_id,
        literal(FlowRunStatus.ACTIVE.value, String()),
        literal(target.definition.first.key, String()),
        literal(1, Integer()),
        literal(False, Boolean()),
        ts if due is None else due,
        entry_key,
        context if context is not None else literal(None, NullableJSONDoc),
        ts,
    ]


# --- SUBSCRIBED -------------------------------------------------------------------------------------------


def _sendable() -> Any:
    return or_(
        Subscription.status == SubStatus.CONFIRMED,
        and_(Subscription.status == SubStatus.UNCONFIRMED, MailingList.optin == OptIn.SINGLE),
    )


async def subscribed(
    bind: Bind,
    *,
    workspace_id: int,
    list_ids: Sequence[int],
    changed_at: datetime,
    subscriber_ids: Sequence[int] | None = None,
) -> int:
    """People whose subscription to one of `list_ids` became sendable by the write stamped `changed_at` (its
    ``updated_at``): new, confirmed, or subscribed again. On a double opt-in list that is the confirmation.
    Returns how many runs started."""
    if not list_ids:
        return 0
    targets = await _targets(
        bind,
        FlowTriggerType.SUBSCRIBED,
        Flow.workspace_id == workspace_id,
        Flow.trigger_list_id.in_(list_ids),
    )
    total = 0
    stamp = changed_at.isoformat()
    for t in targets:
        occurrence = literal(f"subscribed:{t.definition.trigger.list_id}:{stamp}", String())
        conditions = [
            Subscription.workspace_id == workspace_id,
            Subscription.list_id == t.definition.trigger.list_id,
            Subscription.updated_at == changed_at,
            _sendable(),
        ]
        if subscriber_ids is not None:
            conditions.append(Subscription.subscriber_id.in_(subscriber_ids))
        recent = _not_recent(t, Subscription.subscriber_id, changed_at)
        if recent is not None:
            conditions.append(recent)
        source = (
            select(*_run_values(t, Subscription.subscriber_id, _entry_key(t, occurrence), None, utcnow()))
            .select_from(Subscription)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(*conditions)
        )
        total += await _insert_runs(bind, t, source)
    return total


# --- EVENT ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedEvent:
    """A custom event as a trigger sees it."""

    event_id: int
    subscriber_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: datetime


async def events_tracked(bind: Bind, workspace_id: int, events: Sequence[TrackedEvent]) -> int:
    """Custom events just recorded: each starts a run of every ACTIVE flow triggered by its name, with the event
    as the run's context (templates see ``event.name`` and ``event.properties``)."""
    if not events:
        return 0
    names = sorted({e.name for e in events})
    targets = await _targets(
        bind, FlowTriggerType.EVENT, Flow.workspace_id == workspace_id, Flow.trigger_event.in_(names)
    )
    now = utcnow()
    by_name: dict[str, list[TrackedEvent]] = defaultdict(list)
    for e in events:
        by_name[e.name].append(e)
    total = 0
    for t in targets:
        matching = by_name.get(t.definition.trigger.event_name or "", [])
        total += await _enter_each(bind, t, matching, now)
    return total


async def _enter_each(bind: Bind, t: Target, events: Sequence[TrackedEvent], now: datetime) -> int:
    """One run per event (per person under ONCE or AFTER_SECONDS), in one multi-row INSERT."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    return await _enter_occurrences(
        bind,
        t,
        [
            (
                e.subscriber_id,
                f"event:{e.event_id}",
                {
                    "event": {
                        "name": e.name,
                        "properties": e.properties,
                        "occurredAt": e.occurred_at.isoformat(),
                    }
                },
            )
            for e in ordered
        ],
        now,
    )


async def _enter_occurrences(
    bind: Bind, t: Target, occurrences: Sequence[tuple[int, str, dict[str, Any] | None]], now: datetime
) -> int:
    """A run per (person, occurrence key, context), the first of a person only unless re-entry is ALWAYS."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    people: set[int] = set()
    for subscriber_id, key, context in occurrences:
        if t.definition.reentry is not FlowReentry.ALWAYS and subscriber_id in people:
            continue  # the same batch names the person twice: the first occurrence is the entry
        people.add(subscriber_id)
        row = _row(t, subscriber_id, key, context, now, None)
        rows.setdefault((subscriber_id, row["entry_key"]), row)
    return await _insert_rows(bind, t, list(rows.values()), now)


async def _recently_entered(bind: Bind, t: Target, subscriber_ids: Sequence[int], now: datetime) -> set[int]:
    since = now - timedelta(seconds=t.definition.reentry_seconds or 0)
    stmt = select(FlowRun.subscriber_id).where(
        FlowRun.flow_id == t.flow_id, FlowRun.subscriber_id.in_(subscriber_ids), FlowRun.entered_at > since
    )
    return {int(x) for x in (await bind.execute(stmt)).scalars() if x is not None}


# --- ENGAGED ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engagement:
    """A person's open or click of a campaign's message, just recorded."""

    subscriber_id: int
    campaign_id: int
    # The clicked URL; None for an open.
    url: str | None
    # What tells this occurrence from others of the same person (the event's dedupe key, or its time).
    key: str


async def engaged(bind: Bind, workspace_id: int, engagements: Sequence[Engagement]) -> int:
    """Opens and clicks of campaigns that ENGAGED flows watch. A flow with a link URL starts on clicks of that
    link; one without, on an open or a click of the campaign."""
    if not engagements:
        return 0
    campaigns = sorted({e.campaign_id for e in engagements})
    targets = await _targets(
        bind,
        FlowTriggerType.ENGAGED,
        Flow.workspace_id == workspace_id,
        Flow.trigger_campaign_id.in_(campaigns),
    )
    now = utcnow()
    total = 0
    for t in targets:
        trig = t.definition.trigger
        matching = [
            (
                e.subscriber_id,
                f"engaged:{e.key}",
                {"event": {"name": "engaged", "properties": {"campaignId": e.campaign_id, "url": e.url}}},
            )
            for e in engagements
            if e.campaign_id == trig.campaign_id
            and (trig.link_url is None or (e.url is not None and e.url == trig.link_url))
        ]
        total += await _enter_occurrences(bind, t, matching, now)
    return total


# --- for the incremental triggers -------------------------------------------------------------------------


async def enter_people(
    bind: Bind,
    t: Target,
    subscriber_ids: Sequence[int],
    *,
    occurrence: str,
    due: dict[int, datetime] | None = None,
) -> int:
    """Enter the given people (a segment's newcomers, today's anniversaries) under `occurrence`; `due`, when
    given, is when each person's run starts (the local time of an anniversary)."""
    if not subscriber_ids:
        return 0
    now = utcnow()
    enabled = select(Subscriber.id).where(
        Subscriber.id.in_(subscriber_ids), Subscriber.status == SubscriberStatus.ENABLED
    )
    rows = [
        _row(t, int(sid), occurrence, None, now, (due or {}).get(int(sid)))
        for sid in (await bind.execute(enabled)).scalars()
    ]
    return await _insert_rows(bind, t, rows, now)
