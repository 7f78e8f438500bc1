"""Who a campaign reaches: the subscribers of its target lists plus those matching any of its target
segments, classified as sendable or skipped.

A segment match is sent only while it has a sendable subscription to some list: a segment narrows who is
mailed, it never reaches people who are not (or no longer) subscribed to anything.

Each member comes with the lists through which they are sendable. The pipeline records them on the delivery,
and an unsubscribe from that delivery leaves every one of them: a segment-only campaign reaches people
through lists it never names, and unsubscribing them from nothing would let the next campaign mail them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Text,
    and_,
    case,
    exists,
    false,
    func,
    or_,
    select,
    union,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

from emailkit.db.dialect import dialect_of
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from emailkit.db.tables.sending import Campaign, CampaignList
from emailkit.db.types import utcnow
from emailkit.domain.audience.segments.compile import matching_any
from emailkit.domain.audience.segments.store import campaign_definitions

# Why a member of the audience gets no mail; stored on the delivery row and counted as SKIPPED.
SKIP_BLOCKLISTED = "blocklisted"
SKIP_UNSUBSCRIBED = "unsubscribed"
SKIP_UNCONFIRMED = "unconfirmed"
SKIP_SUPPRESSED = "suppressed"
# recipients_stmt reports an address on the suppression list as this (negative) sendable count.
SUPPRESSED_SENDABLE = -1


@dataclass(frozen=True)
class Target:
    """What a campaign is sent to: lists, and the subscribers matching any target segment."""

    list_ids: tuple[int, ...] = ()
    # A condition over `subscribers`; None when the campaign targets no segment.
    segment_match: ColumnElement[bool] | None = None

    @property
    def empty(self) -> bool:
        return not self.list_ids and self.segment_match is None


def _target(target: Target | Sequence[int]) -> Target:
    return target if isinstance(target, Target) else Target(list_ids=tuple(target))


async def load_target(session: AsyncSession, campaign_id: int, *, as_of: datetime | None = None) -> Target:
    """The campaign's lists and segments. Segments use the definitions recorded at start, evaluated as of
    ``as_of`` (default: the campaign's start), so engagement after the start does not move the audience."""
    list_ids = (
        await session.execute(
            select(CampaignList.list_id)
            .where(CampaignList.campaign_id == campaign_id)
            .order_by(CampaignList.list_id)
        )
    ).scalars()
    if as_of is None:
        started = select(Campaign.started_at).where(Campaign.id == campaign_id)
        as_of = (await session.execute(started)).scalar_one_or_none() or utcnow()
    definitions = await campaign_definitions(session, campaign_id)
    match = matching_any(definitions, dialect_of(session), as_of=as_of)
    return Target(list_ids=tuple(int(x) for x in list_ids), segment_match=match)


def members_stmt(target: Target | Sequence[int], max_id: int) -> Select[Any] | CompoundSelect[Any]:
    """Distinct ids (column ``subscriber_id``) of the audience up to the snapshot bound: subscribers with any
    subscription row on the target lists, and subscribers matching a target segment."""
    t = _target(target)
    on_lists = (
        select(Subscription.subscriber_id)
        .where(Subscription.list_id.in_(t.list_ids), Subscription.subscriber_id <= max_id)
        .distinct()
    )
    if t.segment_match is None:
        return on_lists
    matching = select(Subscriber.id.label("subscriber_id")).where(Subscriber.id <= max_id, t.segment_match)
    return union(on_lists, matching) if t.list_ids else matching


async def snapshot(session: AsyncSession, target: Target | Sequence[int]) -> tuple[int, int]:
    """(max subscriber id, audience size) at this instant."""
    max_id = (await session.execute(select(func.max(Subscriber.id)))).scalar_one_or_none() or 0
    members = members_stmt(target, max_id).subquery()
    count = (await session.execute(select(func.count()).select_from(members))).scalar_one()
    return int(max_id), int(count)


async def batch_boundaries(
    session: AsyncSession, target: Target | Sequence[int], max_id: int, size: int
) -> list[int]:
    """First subscriber id of every `size`-member slice of the audience, computed in the database."""
    members = members_stmt(target, max_id).subquery()
    numbered = select(
        members.c.subscriber_id.label("sid"),
        func.row_number().over(order_by=members.c.subscriber_id).label("rn"),
    ).subquery()
    stmt = select(numbered.c.sid).where((numbered.c.rn - 1) % size == 0).order_by(numbered.c.sid)
    return [int(x) for x in (await session.execute(stmt)).scalars()]


class id_list(GenericFunction[str]):
    """Aggregate: the non-NULL ids of the group as text, comma-separated ("3,8"), or NULL when none."""

    type = Text()
    inherit_cache = True


@compiles(id_list, "postgresql")
def _id_list_pg(element: id_list, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"string_agg(CAST({arg} AS TEXT), ',' ORDER BY {arg})"


@compiles(id_list)
def _id_list_default(element: id_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)})"


def parse_id_list(text: str | None) -> list[int]:
    return sorted({int(x) for x in text.split(",")}) if text else []


# Sendable: CONFIRMED, or UNCONFIRMED on a SINGLE opt-in list (nobody is asked to confirm there).
SENDABLE = or_(
    Subscription.status == SubscriptionStatus.CONFIRMED,
    and_(Subscription.status == SubscriptionStatus.UNCONFIRMED, MailingList.optin == OptIn.SINGLE),
)


def recipients_stmt(
    target: Target | Sequence[int], lo: int, hi: int
) -> Select[int, str, SubscriberStatus, Any, Any, str | None]:
    """Audience members in [lo, hi] with their subscriber status, how many relevant subscriptions are
    sendable (relevant: those on target lists; for a segment match, those on any list), or
    SUPPRESSED_SENDABLE when the address is on the suppression list, how many are unconfirmed, and the ids of
    the lists of the sendable ones (an :class:`id_list`): the lists through which the member is reached."""
    t = _target(target)
    if t.segment_match is not None:
        return _with_segments_stmt(t, t.segment_match, lo, hi)
    list_ids = t.list_ids
    sendable = case((SENDABLE, 1), else_=0)
    unconfirmed = case((Subscription.status == SubscriptionStatus.UNCONFIRMED, 1), else_=0)
    return (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.status,
            _unless_suppressed(func.sum(sendable)).label("sendable"),
            func.sum(unconfirmed).label("unconfirmed"),
            id_list(case((SENDABLE, Subscription.list_id))).label("via"),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(Subscription.list_id.in_(list_ids), Subscriber.id >= lo, Subscriber.id <= hi)
        .group_by(Subscriber.id, Subscriber.email, Subscriber.status)
        .order_by(Subscriber.id)
    )


def _with_segments_stmt(
    t: Target, match: ColumnElement[bool], lo: int, hi: int
) -> Select[int, str, SubscriberStatus, Any, Any, str | None]:
    on_lists: ColumnElement[bool] = (
        exists().where(Subscription.subscriber_id == Subscriber.id, Subscription.list_id.in_(t.list_ids))
        if t.list_ids
        else false()
    )
    members = (
        select(
            Subscriber.id.label("id"),
            Subscriber.email.label("email"),
            Subscriber.status.label("status"),
            case((match, 1), else_=0).label("matched"),
        )
        .where(Subscriber.id >= lo, Subscriber.id <= hi, or_(on_lists, match))
        .subquery()
    )
    relevant = or_(members.c.matched == 1, Subscription.list_id.in_(t.list_ids))
    sendable = case((and_(relevant, SENDABLE), 1), else_=0)
    unconfirmed = case((and_(relevant, Subscription.status == SubscriptionStatus.UNCONFIRMED), 1), else_=0)
    return (
        select(
            members.c.id,
            members.c.email,
            members.c.status,
            _unless_suppressed(func.coalesce(func.sum(sendable), 0)).label("sendable"),
            func.coalesce(func.sum(unconfirmed), 0).label("unconfirmed"),
            id_list(case((and_(relevant, SENDABLE), Subscription.list_id))).label("via"),
        )
        .select_from(members)
        .outerjoin(Subscription, Subscription.subscriber_id == members.c.id)
        .outerjoin(MailingList, MailingList.id == Subscription.list_id)
        .outerjoin(Suppression, Suppression.email == members.c.email)
        .group_by(members.c.id, members.c.email, members.c.status)
        .order_by(members.c.id)
    )


def _unless_suppressed(sendable: ColumnElement[Any]) -> ColumnElement[Any]:
    # Suppression emails are unique, so the outer join adds no rows: a match shows in every row of the group.
    return case((func.count(Suppression.id) > 0, SUPPRESSED_SENDABLE), else_=sendable)


def skip_reason(status: SubscriberStatus, sendable: int, unconfirmed: int) -> str | None:
    if status is SubscriberStatus.BLOCKLISTED:
        return SKIP_BLOCKLISTED
    if sendable == SUPPRESSED_SENDABLE:
        return SKIP_SUPPRESSED
    if sendable > 0:
        return None
    return SKIP_UNCONFIRMED if unconfirmed > 0 else SKIP_UNSUBSCRIBED
