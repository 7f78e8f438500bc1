"""Relations read for many parents at once (the API's DataLoaders batch through these).

Each function answers for every id it is given, in one statement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.feedback import CampaignTimeline, Event, EventType
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.domain.child_pages import ChildPage, child_pages
from emailkit.domain.counting import DEFAULT_EXACT_LIMIT, Count, count_children
from emailkit.domain.feedback.analytics import MAX_TIMELINE_ROWS, TimelineBucket, TimelinePoint


def _deliveries(status: DeliveryStatus | None) -> Select[Any]:
    stmt = select(Delivery)
    return stmt.where(Delivery.status == status) if status is not None else stmt


async def delivery_pages(
    session: AsyncSession,
    campaign_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    status: DeliveryStatus | None = None,
) -> dict[int, ChildPage[Delivery]]:
    """Each campaign's deliveries in ledger order (by id)."""
    return await child_pages(
        session,
        _deliveries(status),
        Delivery.campaign_id,
        Delivery.id,
        campaign_ids,
        first=first,
        after=after,
    )


async def delivery_counts(
    session: AsyncSession,
    campaign_ids: Sequence[int],
    status: DeliveryStatus | None = None,
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
) -> dict[int, Count]:
    return await count_children(session, _deliveries(status), Delivery.campaign_id, campaign_ids, exact_limit)


async def deliveries_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Delivery]:
    rows = (await session.execute(select(Delivery).where(Delivery.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def event_pages(
    session: AsyncSession, subscriber_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, ChildPage[Event]]:
    """Each subscriber's events, newest first (by id, i.e. by arrival)."""
    return await child_pages(
        session,
        select(Event),
        Event.subscriber_id,
        Event.id,
        subscriber_ids,
        first=first,
        after=after,
        descending=True,
    )


async def event_counts(
    session: AsyncSession, subscriber_ids: Sequence[int], *, exact_limit: int = DEFAULT_EXACT_LIMIT
) -> dict[int, Count]:
    return await count_children(session, select(Event), Event.subscriber_id, subscriber_ids, exact_limit)


async def timelines(
    session: AsyncSession,
    campaign_ids: Sequence[int],
    bucket: TimelineBucket = TimelineBucket.HOUR,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[int, list[TimelinePoint]]:
    """Like ``analytics.timeline`` for each campaign: events per bucket and type, oldest first."""
    out: dict[int, list[TimelinePoint]] = {c: [] for c in campaign_ids}
    if not campaign_ids:
        return out
    position = (
        func.row_number()
        .over(partition_by=CampaignTimeline.campaign_id, order_by=CampaignTimeline.bucket)
        .label("position")
    )
    numbered = select(
        CampaignTimeline.campaign_id, CampaignTimeline.bucket, CampaignTimeline.type, CampaignTimeline.count
    ).where(CampaignTimeline.campaign_id.in_(campaign_ids))
    if since is not None:
        numbered = numbered.where(CampaignTimeline.bucket >= since)
    if until is not None:
        numbered = numbered.where(CampaignTimeline.bucket < until)
    rows = numbered.add_columns(position).subquery()
    stmt = select(rows.c.campaign_id, rows.c.bucket, rows.c.type, rows.c["count"]).where(
        rows.c.position <= MAX_TIMELINE_ROWS
    )
    points: dict[int, dict[datetime, dict[EventType, int]]] = defaultdict(lambda: defaultdict(dict))
    for campaign_id, at, type_, count in await session.execute(stmt):
        start = at.replace(hour=0) if bucket is TimelineBucket.DAY else at
        counts = points[campaign_id][start]
        counts[type_] = counts.get(type_, 0) + int(count)
    for campaign_id, by_start in points.items():
        out[campaign_id] = [TimelinePoint(start, counts) for start, counts in sorted(by_start.items())]
    return out
