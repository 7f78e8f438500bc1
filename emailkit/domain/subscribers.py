"""Subscribers and their list subscriptions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.models import Subscriber, Subscription


async def subscribers_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Subscriber]:
    rows = (await session.execute(select(Subscriber).where(Subscriber.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def subscriptions_by_subscriber(
    session: AsyncSession, subscriber_ids: Sequence[int]
) -> dict[int, list[Subscription]]:
    stmt = (
        select(Subscription)
        .where(Subscription.subscriber_id.in_(subscriber_ids))
        .order_by(Subscription.subscriber_id, Subscription.list_id)
    )
    out: dict[int, list[Subscription]] = defaultdict(list)
    for row in (await session.execute(stmt)).scalars():
        out[row.subscriber_id].append(row)
    return out
