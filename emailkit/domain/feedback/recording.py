"""Recording a batch of events: the one write path of the feedback loop (webhooks and tracking hits).

A batch may concern several workspaces (a provider's account sends for all of them): it is recorded for all
workspaces, and every row it writes names the workspace of the delivery or campaign it is about (see
:mod:`.correlation`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.scope import NoWorkspaceScope, all_workspaces, current_scope
from emailkit.db.tables.feedback import EventType
from emailkit.db.tables.sending import Campaign
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.db.types import utcnow
from emailkit.domain.automation.engagement import engagement_recorded
from emailkit.domain.feedback import policy as rules
from emailkit.domain.feedback import storage
from emailkit.domain.feedback.correlation import correlate
from emailkit.domain.feedback.live import StatsSnapshot, stats_channel
from emailkit.domain.feedback.types import (
    FeedbackPolicy,
    IncomingEvent,
    Pending,
    RecordSummary,
    from_incoming,
    from_normalized,
)
from emailkit.domain.ports.webhooks import NormalizedEvent
from emailkit.domain.sending.progress import ProgressReporter
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.domain.webhooks_out import emitters
from emailkit.domain.webhooks_out.emitters import FeedbackFact

log = logging.getLogger(__name__)

# SQLite lets one writer in at a time; a writer waits for the lock up to the busy timeout (see db.engine), and
# a batch that waited that out is simply run again.
_SQLITE_ATTEMPTS = 5


@dataclass
class Recorded:
    summary: RecordSummary
    snapshots: dict[int, StatsSnapshot] = field(default_factory=dict)


def to_pending(events: Sequence[IncomingEvent | NormalizedEvent], now: datetime) -> list[Pending]:
    return [from_normalized(e) if isinstance(e, NormalizedEvent) else from_incoming(e, now) for e in events]


def unclaimed_workspace() -> int:
    """Where events tied to no delivery, campaign or subscriber go: the workspace in scope, or the default
    workspace for a batch recorded for all workspaces."""
    scope = current_scope()
    if scope is None:
        raise NoWorkspaceScope("events are recorded for all workspaces or inside one")
    return DEFAULT_WORKSPACE_ID if scope.workspace_id is None else scope.workspace_id


async def record(
    session: AsyncSession,
    events: Sequence[IncomingEvent | NormalizedEvent],
    policy: FeedbackPolicy,
    now: datetime,
) -> Recorded:
    """Everything :func:`record_events` does inside the caller's transaction, except publishing (which
    must wait for the commit: call :func:`publish` afterwards).

    The caller's scope decides what the events can be tied to: all workspaces (system work, as
    :func:`record_events`), or one workspace, whose rows alone are then found and written."""
    fallback = unclaimed_workspace()
    summary = RecordSummary(received=len(events))
    rows = to_pending(events, now)
    if not rows:
        return Recorded(summary)
    # Duplicates first: a provider's retry of a whole batch then costs one statement.
    new = await storage.keep_new(session, rows, now)
    summary.duplicates = len(rows) - len(new)
    summary.stored = len(new)
    if not new:
        return Recorded(summary)
    await correlate(session, new, fallback)
    for r in new:
        if r.anonymous:
            r.strip_identity()
    summary.uncorrelated = sum(1 for r in new if r.delivery_id is None)
    await storage.insert_events(session, new, now)
    # Outgoing webhooks (bounce, complaint, open, click...), for new events only and after privacy mode has
    # stripped the anonymous ones; nothing is built when no endpoint of these workspaces listens.
    if await emitters.feedback_listened(session, (r.workspace_id for r in new)):
        await emitters.feedback_recorded(session, [_fact(r) for r in new])
    engaged = [
        (r.workspace_id, r.type, r.delivery_id, r.campaign_id, r.subscriber_id, r.url, _occurrence(r))
        for r in new
        if r.type in (EventType.OPEN, EventType.CLICK)
    ]
    if engaged:
        await engagement_recorded(session, engaged, now)
    deltas = await storage.count(session, new)
    summary.suppressed = await rules.suppress(
        session, await rules.suppressions_for(session, new, policy), now
    )
    summary.unsubscribed = await rules.unsubscribe(session, new, now)
    await storage.apply_links_and_timeline(session, deltas)
    counters = await storage.apply_stats(session, deltas, now)
    campaigns = await rules.campaign_counts(session, set(counters))
    complained = {cid for cid, d in deltas.stats.items() if d.get("complained")}
    summary.paused = await rules.complaint_guard(session, counters, campaigns, complained, policy, now)
    summary.campaigns = set(counters)
    snapshots = {
        cid: StatsSnapshot(campaign_id=cid, recipients=c.recipients, sent=c.sent, **counters[cid])
        for cid, c in campaigns.items()
    }
    return Recorded(summary, snapshots)


def _occurrence(r: Pending) -> str:
    """What tells an open or click from the person's others, for a flow it starts."""
    return r.dedupe_key or f"{r.delivery_id}:{r.type.value}:{r.occurred_at.isoformat()}"


def _fact(r: Pending) -> FeedbackFact:
    return FeedbackFact(
        r.workspace_id,
        r.type,
        r.occurred_at,
        r.delivery_id,
        r.campaign_id,
        r.subscriber_id,
        r.email,
        r.bounce_type,
        r.reason,
        r.url,
    )


async def publish(db: Database, recorded: Recorded, live: CoalescingPublisher | None) -> None:
    """Push the new stats (throttled per campaign), and the status of campaigns the guard paused."""
    if live is None:
        return
    for cid, snapshot in recorded.snapshots.items():
        await live.publish(stats_channel(cid), snapshot.message())
    if recorded.summary.paused:
        reporter = ProgressReporter(live)
        # The paused campaigns were just read by id in the recording: they may belong to any workspace.
        with all_workspaces():
            await _report_paused(db, reporter, recorded.summary.paused)


async def _report_paused(db: Database, reporter: ProgressReporter, paused: list[int]) -> None:
    async with db.session() as session:
        for cid in paused:
            campaign = await session.get(Campaign, cid)
            if campaign is not None:
                await reporter.report(campaign, final=True)


async def record_events(
    db: Database,
    events: Sequence[IncomingEvent | NormalizedEvent],
    *,
    policy: FeedbackPolicy | None = None,
    live: CoalescingPublisher | None = None,
    now: datetime | None = None,
) -> RecordSummary:
    """Correlate, deduplicate, store and count ``events`` and apply the policy, in one transaction; then
    publish the changed campaigns' live stats. Safe to call again with the same events (retries).

    System work, whatever the caller's scope: the events are recorded for all workspaces, each in the
    workspace of the delivery (else the campaign, else the subscriber) it is about. Events tied to none of
    them are stored in the default workspace (DEFAULT_WORKSPACE_ID), and so is what their policy does (a hard
    bounce of an unknown address suppresses it there)."""
    if not events:
        return RecordSummary()
    with all_workspaces():
        return await _record_events(db, events, policy or FeedbackPolicy(), live, now or utcnow())


async def _record_events(
    db: Database,
    events: Sequence[IncomingEvent | NormalizedEvent],
    policy: FeedbackPolicy,
    live: CoalescingPublisher | None,
    now: datetime,
) -> RecordSummary:
    attempts = _SQLITE_ATTEMPTS if db.dialect == "sqlite" else 1
    for attempt in range(1, attempts + 1):
        try:
            async with db.transaction() as session:
                recorded = await record(session, events, policy, now)
            break
        except OperationalError as exc:
            if attempt == attempts or "locked" not in str(exc):
                raise
            await asyncio.sleep(0.05 * attempt)
    await publish(db, recorded, live)
    if recorded.summary.paused:
        log.warning("complaint guard paused campaigns %s", recorded.summary.paused)
    return recorded.summary
