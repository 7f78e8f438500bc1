"""What recorded events change beyond the counters: suppression, blocklisting, unsubscribes, pausing.

* a hard bounce or a complaint suppresses the address at once and blocklists its subscriber;
* ``soft_bounce_limit`` soft bounces of one address within ``soft_bounce_window`` do the same;
* an unsubscribe marks UNSUBSCRIBED the subscriber's subscriptions to every list through which its delivery
  could reach them (see :mod:`emailkit.domain.audience.preferences.scope`; every list when no delivery is known);
* a RUNNING campaign whose complaint rate passes ``complaint_pause_rate`` (once ``complaint_min_sample``
  messages were delivered, or sent when the provider reports no deliveries) is PAUSED, with the reason.

Each rule acts in the workspace of the event (see :mod:`.correlation`): an address suppressed after a bounce of
one workspace's mail stays sendable for the others, and soft bounces are counted per workspace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, one_of, pg_driver, upsert
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.feedback import BounceType, Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.domain.audience.preferences import scope
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.feedback.types import FeedbackPolicy, Pending
from emailkit.domain.sending import lifecycle

_PG_SUPPRESS = """
INSERT INTO suppressions (workspace_id, email, email_hash, reason, source, detail, campaign_id, created_at)
SELECT u.workspace_id, u.email, u.hash, u.reason, u.source, u.detail, c.id, $7
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::text[], $6::bigint[], $8::bigint[])
    AS u(email, hash, reason, source, detail, campaign_id, workspace_id)
-- The campaign may have been deleted meanwhile: keep the entry, drop the reference.
LEFT JOIN campaigns c ON c.id = u.campaign_id AND c.workspace_id = u.workspace_id
ON CONFLICT DO NOTHING
RETURNING id
"""
_PG_BLOCKLIST = """
UPDATE subscribers AS s SET status = 'BLOCKLISTED', updated_at = $3
FROM unnest($1::bigint[], $2::varchar[]) AS u(workspace_id, email)
WHERE s.workspace_id = u.workspace_id AND s.email = u.email AND s.status <> 'BLOCKLISTED'
RETURNING s.id
"""
_PG_UNSUBSCRIBE_ALL = (
    "UPDATE subscriptions SET status = 'UNSUBSCRIBED', updated_at = $2 "
    "WHERE subscriber_id = ANY($1::bigint[]) AND status <> 'UNSUBSCRIBED'"
)
_PG_SOFT_BOUNCES = (
    "SELECT workspace_id, email, occurred_at FROM events WHERE email = ANY($1::varchar[]) "
    "AND type = 'BOUNCE' AND bounce_type = 'SOFT' AND occurred_at >= $2"
)

# An address in a workspace.
Address = tuple[int, str]


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    workspace_id: int
    email: str
    reason: SuppressionReason
    source: str
    detail: str | None = None
    campaign_id: int | None = None


async def suppress(session: AsyncSession, entries: Sequence[SuppressionEntry], now: datetime) -> int:
    """Add the addresses to their workspace's suppression list (an existing entry is kept as it is) and
    blocklist that workspace's subscribers with them, which also ends their list subscriptions. Returns how
    many entries were new."""
    if not entries:
        return 0
    unique: dict[Address, SuppressionEntry] = {}
    for entry in entries:
        unique.setdefault((entry.workspace_id, entry.email), entry)
    ordered = [unique[key] for key in sorted(unique)]
    if dialect_of(session) == "postgresql":
        rows = await (await pg_driver(session)).fetch(
            _PG_SUPPRESS,
            [e.email for e in ordered],
            [email_hash(e.email) for e in ordered],
            [e.reason.value for e in ordered],
            [e.source[:32] for e in ordered],
            [e.detail for e in ordered],
            [e.campaign_id for e in ordered],
            now,
            [e.workspace_id for e in ordered],
        )
        added = len(rows)
    else:
        stmt = upsert(session)(Suppression.__table__).on_conflict_do_nothing().returning(Suppression.id)
        result = await session.execute(
            stmt,
            [
                {
                    "workspace_id": e.workspace_id,
                    "email": e.email,
                    "email_hash": email_hash(e.email),
                    "reason": e.reason,
                    "source": e.source[:32],
                    "detail": e.detail,
                    "campaign_id": e.campaign_id,
                    "created_at": now,
                }
                for e in ordered
            ],
        )
        added = len(result.all())
    await blocklist(session, unique, now)
    return added


async def blocklist(session: AsyncSession, addresses: Iterable[Address], now: datetime) -> list[int]:
    """Blocklist the subscribers with these addresses, each in its workspace only, and end their list
    subscriptions; returns their ids."""
    wanted = sorted(set(addresses))
    if not wanted:
        return []
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        workspaces, emails = (list(column) for column in zip(*wanted, strict=True))
        ids = [r[0] for r in await driver.fetch(_PG_BLOCKLIST, workspaces, emails, now)]
        if ids:
            await driver.execute(_PG_UNSUBSCRIBE_ALL, ids, now)
        return ids
    by_workspace: dict[int, list[str]] = defaultdict(list)
    for workspace_id, email in wanted:
        by_workspace[workspace_id].append(email)
    ids = []
    for workspace_id, emails in sorted(by_workspace.items()):
        ids += await _blocklist_in(session, workspace_id, emails, now)
    if ids:
        await session.execute(
            update(Subscription)
            .where(
                one_of(session, Subscription.subscriber_id, ids, BigInteger()),
                Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return ids


async def _blocklist_in(
    session: AsyncSession, workspace_id: int, emails: list[str], now: datetime
) -> list[int]:
    result = await session.execute(
        update(Subscriber)
        .where(
            Subscriber.workspace_id == workspace_id,
            one_of(session, Subscriber.email, emails, String()),
            Subscriber.status != SubscriberStatus.BLOCKLISTED,
        )
        .values(status=SubscriberStatus.BLOCKLISTED, updated_at=now)
        .returning(Subscriber.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


def _immediate(rows: Sequence[Pending]) -> list[SuppressionEntry]:
    out = []
    for r in rows:
        if r.email is None:
            continue
        if r.type is EventType.BOUNCE and r.bounce_type is BounceType.HARD:
            reason = SuppressionReason.HARD_BOUNCE
        elif r.type is EventType.COMPLAINT:
            reason = SuppressionReason.COMPLAINT
        else:
            continue
        out.append(SuppressionEntry(r.workspace_id, r.email, reason, r.provider, r.reason, r.campaign_id))
    return out


async def _soft_bounce_limit_reached(
    session: AsyncSession, rows: Sequence[Pending], policy: FeedbackPolicy
) -> list[SuppressionEntry]:
    """Addresses whose newest soft bounce completes ``soft_bounce_limit`` of them within the window, in the
    same workspace (the window is anchored on the bounces' own times, so late or replayed batches are judged
    fairly)."""
    latest: dict[Address, Pending] = {}
    for r in rows:
        if r.email and r.type is EventType.BOUNCE and r.bounce_type is BounceType.SOFT:
            key = (r.workspace_id, r.email)
            if key not in latest or r.occurred_at > latest[key].occurred_at:
                latest[key] = r
    if not latest:
        return []
    since = min(r.occurred_at for r in latest.values()) - policy.soft_bounce_window
    emails = sorted({email for _, email in latest})
    times: dict[Address, list[datetime]] = defaultdict(list)
    if dialect_of(session) == "postgresql":
        for workspace_id, email, at in await (await pg_driver(session)).fetch(
            _PG_SOFT_BOUNCES, emails, since
        ):
            times[(workspace_id, email)].append(at)
        return _soft_bounce_entries(latest, times, policy)
    stmt = select(Event.workspace_id, Event.email, Event.occurred_at).where(
        one_of(session, Event.email, emails, String()),
        Event.type == EventType.BOUNCE,
        Event.bounce_type == BounceType.SOFT,
        Event.occurred_at >= since,
    )
    for workspace_id, email, at in await session.execute(stmt):
        if email is not None:
            times[(workspace_id, email)].append(at)
    return _soft_bounce_entries(latest, times, policy)


def _soft_bounce_entries(
    latest: dict[Address, Pending], times: dict[Address, list[datetime]], policy: FeedbackPolicy
) -> list[SuppressionEntry]:
    out = []
    for (workspace_id, email), r in latest.items():
        window_start = r.occurred_at - policy.soft_bounce_window
        recent = sum(1 for at in times.get((workspace_id, email), ()) if window_start <= at <= r.occurred_at)
        if recent >= policy.soft_bounce_limit:
            detail = f"{recent} soft bounces within {policy.soft_bounce_window.days} days"
            if r.reason:
                detail += f"; last: {r.reason}"
            out.append(
                SuppressionEntry(
                    workspace_id, email, SuppressionReason.SOFT_BOUNCE, r.provider, detail, r.campaign_id
                )
            )
    return out


async def suppressions_for(
    session: AsyncSession, rows: Sequence[Pending], policy: FeedbackPolicy
) -> list[SuppressionEntry]:
    """Run after the batch is stored, so its own soft bounces are counted."""
    return _immediate(rows) + await _soft_bounce_limit_reached(session, rows, policy)


async def unsubscribe(session: AsyncSession, rows: Sequence[Pending], now: datetime) -> int:
    """Apply unsubscribe events; returns how many subscriptions changed."""
    recipients: dict[int | None, set[int]] = defaultdict(set)
    for r in rows:
        if r.type is EventType.UNSUBSCRIBE and r.subscriber_id is not None:
            recipients[r.delivery_id].add(r.subscriber_id)
    if not recipients:
        return 0
    return await scope.unsubscribe_recipients(session, recipients, now)


def complaint_rate_base(delivered: int, sent: int) -> int:
    """What rates are relative to: delivered messages when the provider reports deliveries, else sent."""
    return delivered if delivered > 0 else sent


@dataclass(frozen=True, slots=True)
class CampaignCounts:
    status: CampaignStatus
    recipients: int
    sent: int
    workspace_id: int


_PG_CAMPAIGN_COUNTS = (
    "SELECT id, status, recipients_count, sent_count, workspace_id FROM campaigns "
    "WHERE id = ANY($1::bigint[])"
)


async def campaign_counts(session: AsyncSession, campaign_ids: set[int]) -> dict[int, CampaignCounts]:
    if not campaign_ids:
        return {}
    if dialect_of(session) == "postgresql":
        rows = await (await pg_driver(session)).fetch(_PG_CAMPAIGN_COUNTS, list(campaign_ids))
        return {r[0]: CampaignCounts(CampaignStatus(r[1]), int(r[2]), int(r[3]), r[4]) for r in rows}
    stmt = select(
        Campaign.id, Campaign.status, Campaign.recipients_count, Campaign.sent_count, Campaign.workspace_id
    ).where(one_of(session, Campaign.id, campaign_ids, BigInteger()))
    return {
        cid: CampaignCounts(status, int(recipients), int(sent), workspace_id)
        for cid, status, recipients, sent, workspace_id in await session.execute(stmt)
    }


async def complaint_guard(
    session: AsyncSession,
    counters: Mapping[int, Mapping[str, int]],
    campaigns: Mapping[int, CampaignCounts],
    complained_in_batch: Iterable[int],
    policy: FeedbackPolicy,
    now: datetime,
) -> list[int]:
    """Pause RUNNING campaigns whose complaint rate passed the threshold; returns the paused ids."""
    paused = []
    for cid in sorted(set(complained_in_batch)):
        stats, campaign = counters.get(cid), campaigns.get(cid)
        if stats is None or campaign is None or campaign.status is not CampaignStatus.RUNNING:
            continue
        base = complaint_rate_base(stats["delivered"], campaign.sent)
        complained = stats["complained"]
        if base < policy.complaint_min_sample or complained / base <= policy.complaint_pause_rate:
            continue
        reason = (
            f"Paused automatically: complaint rate {complained / base:.2%} ({complained} of {base}) "
            f"is above the {policy.complaint_pause_rate:.2%} limit"
        )
        # The transition is the campaign's workspace's business, whatever scope the batch is recorded in.
        with workspace_scope(campaign.workspace_id):
            if await lifecycle.pause_automatically(session, cid, reason, now=now):
                paused.append(cid)
    return paused
