"""Reading the feedback loop: campaign stats, links, timeline, and the event log.

Rates are relative to ``delivered`` when the provider reports deliveries and to ``sent`` otherwise (SMTP
and the outbox report none), except the bounce rate, which is relative to ``sent`` (a bounced message was
never delivered). Opens and clicks use the unique counts.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import one_of
from emailkit.db.tables.feedback import CampaignLink, CampaignTimeline, Event, EventType
from emailkit.domain.feedback.live import StatsSnapshot, stats_snapshots
from emailkit.domain.feedback.policy import complaint_rate_base
from emailkit.domain.pagination import Page, keyset_page

MAX_LINKS = 500
# A year of hours; DAY buckets are summed from the same rows.
MAX_TIMELINE_ROWS = 24 * 366 * len(EventType)


class TimelineBucket(enum.StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"


def rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole > 0 else 0.0


@dataclass(frozen=True)
class Rates:
    open_rate: float
    click_rate: float
    bounce_rate: float
    complaint_rate: float


def rates(s: StatsSnapshot) -> Rates:
    base = complaint_rate_base(s.delivered, s.sent)
    return Rates(
        open_rate=rate(s.unique_opens, base),
        click_rate=rate(s.unique_clicks, base),
        bounce_rate=rate(s.bounced, s.sent),
        complaint_rate=rate(s.complained, base),
    )


async def stats_by_campaign(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, StatsSnapshot]:
    return await stats_snapshots(session, set(campaign_ids))


async def links_by_campaign(
    session: AsyncSession, campaign_ids: Sequence[int]
) -> dict[int, list[CampaignLink]]:
    """Each campaign's clicked links, most clicked first (at most MAX_LINKS)."""
    stmt = (
        select(CampaignLink)
        .where(one_of(session, CampaignLink.campaign_id, set(campaign_ids), BigInteger()))
        .order_by(CampaignLink.campaign_id, CampaignLink.clicks.desc(), CampaignLink.url)
    )
    out: dict[int, list[CampaignLink]] = {cid: [] for cid in campaign_ids}
    for link in (await session.execute(stmt)).scalars():
        bucket = out[link.campaign_id]
        if len(bucket) < MAX_LINKS:
            bucket.append(link)
    return out


@dataclass
class TimelinePoint:
    start: datetime
    counts: dict[EventType, int]


async def timeline(
    session: AsyncSession,
    campaign_id: int,
    bucket: TimelineBucket = TimelineBucket.HOUR,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[TimelinePoint]:
    """Events per bucket (UTC hours or days) and type, oldest first; only buckets with events appear."""
    stmt = select(CampaignTimeline.bucket, CampaignTimeline.type, CampaignTimeline.count).where(
        CampaignTimeline.campaign_id == campaign_id
    )
    if since is not None:
        stmt = stmt.where(CampaignTimeline.bucket >= since)
    if until is not None:
        stmt = stmt.where(CampaignTimeline.bucket < until)
    stmt = stmt.order_by(CampaignTimeline.bucket).limit(MAX_TIMELINE_ROWS)
    points: dict[datetime, dict[EventType, int]] = defaultdict(dict)
    for at, type_, count in await session.execute(stmt):
        start = at.replace(hour=0) if bucket is TimelineBucket.DAY else at
        points[start][type_] = points[start].get(type_, 0) + int(count)
    return [TimelinePoint(start, counts) for start, counts in sorted(points.items())]


@dataclass
class EventFilter:
    type: EventType | None = None
    provider: str | None = None
    campaign_id: int | None = None
    subscriber_id: int | None = None
    email: str | None = None
    # A custom event's name, exactly.
    name: str | None = None


async def find_events(
    session: AsyncSession, *, first: int, after: int | None, filter: EventFilter | None = None
) -> Page[Event]:
    """Newest first (by id, i.e. by arrival)."""
    f = filter or EventFilter()
    stmt = select(Event)
    if f.type is not None:
        stmt = stmt.where(Event.type == f.type)
    if f.provider:
        stmt = stmt.where(Event.provider == f.provider.strip().lower())
    if f.campaign_id is not None:
        stmt = stmt.where(Event.campaign_id == f.campaign_id)
    if f.subscriber_id is not None:
        stmt = stmt.where(Event.subscriber_id == f.subscriber_id)
    if f.email:
        stmt = stmt.where(Event.email == f.email.strip().lower())
    if f.name:
        stmt = stmt.where(Event.name == f.name)
    return await keyset_page(session, stmt, Event.id, first=first, after=after, descending=True)


async def events_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Event]:
    rows = (await session.execute(select(Event).where(Event.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}
