"""Who a campaign reaches: the subscribers of its target lists, classified as sendable or skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.models import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)

# Why a member of the audience gets no mail; stored on the delivery row and counted as SKIPPED.
SKIP_BLOCKLISTED = "blocklisted"
SKIP_UNSUBSCRIBED = "unsubscribed"
SKIP_UNCONFIRMED = "unconfirmed"


def members_stmt(list_ids: Sequence[int], max_id: int) -> Select[int]:
    """Distinct subscriber ids with any subscription row on the target lists, up to the snapshot bound."""
    return (
        select(Subscription.subscriber_id)
        .where(Subscription.list_id.in_(list_ids), Subscription.subscriber_id <= max_id)
        .distinct()
    )


async def snapshot(session: AsyncSession, list_ids: Sequence[int]) -> tuple[int, int]:
    """(max subscriber id, audience size) at this instant."""
    max_id = (await session.execute(select(func.max(Subscriber.id)))).scalar_one_or_none() or 0
    members = members_stmt(list_ids, max_id).subquery()
    count = (await session.execute(select(func.count()).select_from(members))).scalar_one()
    return int(max_id), int(count)


async def batch_boundaries(session: AsyncSession, list_ids: Sequence[int], max_id: int, size: int) -> list[int]:
    """First subscriber id of every `size`-member slice of the audience, computed in the database."""
    members = members_stmt(list_ids, max_id).subquery()
    numbered = select(
        members.c.subscriber_id.label("sid"),
        func.row_number().over(order_by=members.c.subscriber_id).label("rn"),
    ).subquery()
    stmt = select(numbered.c.sid).where((numbered.c.rn - 1) % size == 0).order_by(numbered.c.sid)
    return [int(x) for x in (await session.execute(stmt)).scalars()]


def recipients_stmt(
    list_ids: Sequence[int], lo: int, hi: int
) -> Select[int, str, SubscriberStatus, Any, Any]:
    """Audience members in [lo, hi] with their subscriber status and how many target subscriptions are sendable.

    Sendable: CONFIRMED, or UNCONFIRMED on a SINGLE opt-in list (nobody is asked to confirm there).
    """
    sendable = case(
        (
            or_(
                Subscription.status == SubscriptionStatus.CONFIRMED,
                and_(Subscription.status == SubscriptionStatus.UNCONFIRMED, MailingList.optin == OptIn.SINGLE),
            ),
            1,
        ),
        else_=0,
    )
    unconfirmed = case((Subscription.status == SubscriptionStatus.UNCONFIRMED, 1), else_=0)
    return (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.status,
            func.sum(sendable).label("sendable"),
            func.sum(unconfirmed).label("unconfirmed"),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.list_id.in_(list_ids), Subscriber.id >= lo, Subscriber.id <= hi)
        .group_by(Subscriber.id, Subscriber.email, Subscriber.status)
        .order_by(Subscriber.id)
    )


def skip_reason(status: SubscriberStatus, sendable: int, unconfirmed: int) -> str | None:
    if status is SubscriberStatus.BLOCKLISTED:
        return SKIP_BLOCKLISTED
    if sendable > 0:
        return None
    return SKIP_UNCONFIRMED if unconfirmed > 0 else SKIP_UNSUBSCRIBED
