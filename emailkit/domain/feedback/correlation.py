"""Tie events to the delivery (and so the campaign and subscriber) they are about.

In order of trust: our own delivery id carried back in the provider's metadata; the provider's message id
(several deliveries may share one, SendGrid gives one id to a whole batch request, so the address picks the
right one); otherwise the latest delivery sent to a subscriber with that address. A claimed id that does not
exist in the database is ignored rather than trusted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.feedback.sql import one_of
from emailkit.domain.feedback.types import Pending
from emailkit.domain.models import Campaign, Delivery, DeliveryStatus, Subscriber

# Deliveries that actually went out; a SKIPPED or QUEUED row never reached the recipient.
_HANDED_OVER = (DeliveryStatus.SENT, DeliveryStatus.SENDING)


@dataclass(frozen=True, slots=True)
class _Delivery:
    id: int
    campaign_id: int | None
    subscriber_id: int | None
    email: str


def _attach(row: Pending, d: _Delivery) -> None:
    row.delivery_id = d.id
    row.campaign_id = d.campaign_id
    row.subscriber_id = d.subscriber_id
    if row.email is None:
        row.email = d.email


_COLUMNS = (Delivery.id, Delivery.campaign_id, Delivery.subscriber_id, Delivery.email)


async def _by_ids(session: AsyncSession, ids: Iterable[int]) -> dict[int, _Delivery]:
    wanted = set(ids)
    if not wanted:
        return {}
    stmt = select(*_COLUMNS).where(one_of(session, Delivery.id, wanted, BigInteger()))
    return {
        r.id: _Delivery(r.id, r.campaign_id, r.subscriber_id, r.email) for r in await session.execute(stmt)
    }


async def _by_message_ids(session: AsyncSession, ids: Iterable[str]) -> dict[str, list[_Delivery]]:
    wanted = set(ids)
    if not wanted:
        return {}
    stmt = select(*_COLUMNS, Delivery.provider_message_id).where(
        one_of(session, Delivery.provider_message_id, wanted, String())
    )
    found: dict[str, list[_Delivery]] = defaultdict(list)
    for r in await session.execute(stmt):
        found[r.provider_message_id].append(_Delivery(r.id, r.campaign_id, r.subscriber_id, r.email))
    return found


async def _subscribers_by_email(session: AsyncSession, emails: Iterable[str]) -> dict[str, int]:
    wanted = set(emails)
    if not wanted:
        return {}
    stmt = select(Subscriber.email, Subscriber.id).where(one_of(session, Subscriber.email, wanted, String()))
    return {r.email: r.id for r in await session.execute(stmt)}


async def _existing(
    session: AsyncSession, model: type[Campaign] | type[Subscriber], ids: set[int]
) -> set[int]:
    if not ids:
        return set()
    stmt = select(model.id).where(one_of(session, model.id, ids, BigInteger()))
    return set((await session.execute(stmt)).scalars())


async def _latest_for_subscribers(
    session: AsyncSession, subscriber_ids: Iterable[int]
) -> dict[int, _Delivery]:
    wanted = set(subscriber_ids)
    if not wanted:
        return {}
    latest = (
        select(func.max(Delivery.id).label("id"))
        .where(
            one_of(session, Delivery.subscriber_id, wanted, BigInteger()), Delivery.status.in_(_HANDED_OVER)
        )
        .group_by(Delivery.subscriber_id)
        .subquery()
    )
    stmt = select(*_COLUMNS).join(latest, latest.c.id == Delivery.id)
    out: dict[int, _Delivery] = {}
    for r in await session.execute(stmt):
        if r.subscriber_id is not None:
            out[r.subscriber_id] = _Delivery(r.id, r.campaign_id, r.subscriber_id, r.email)
    return out


async def _for_campaign_and_subscriber(
    session: AsyncSession, pairs: set[tuple[int, int]]
) -> dict[tuple[int, int], _Delivery]:
    if not pairs:
        return {}
    campaigns = {c for c, _ in pairs}
    subscribers = {s for _, s in pairs}
    stmt = select(*_COLUMNS).where(
        one_of(session, Delivery.campaign_id, campaigns, BigInteger()),
        one_of(session, Delivery.subscriber_id, subscribers, BigInteger()),
    )
    out: dict[tuple[int, int], _Delivery] = {}
    for r in await session.execute(stmt):
        key = (r.campaign_id, r.subscriber_id)
        if key in pairs:
            out[key] = _Delivery(r.id, r.campaign_id, r.subscriber_id, r.email)
    return out


async def correlate(session: AsyncSession, rows: Sequence[Pending]) -> None:
    """Fill in delivery, campaign and subscriber ids in place (a few queries for the whole batch)."""
    by_id = await _by_ids(session, (r.delivery_ref for r in rows if r.delivery_ref is not None))
    for r in rows:
        if r.delivery_ref is not None and (d := by_id.get(r.delivery_ref)) is not None:
            _attach(r, d)

    by_message = await _by_message_ids(
        session, (r.provider_message_id for r in rows if r.delivery_id is None and r.provider_message_id)
    )
    for r in rows:
        if (
            r.delivery_id is None
            and r.provider_message_id
            and (found := by_message.get(r.provider_message_id))
        ):
            same_address = [d for d in found if d.email == r.email]
            if same_address:
                _attach(r, same_address[0])
            elif len(found) == 1:
                _attach(r, found[0])

    # Claimed subscriber and campaign ids, checked; then the subscriber by address.
    claimed_subscribers = await _existing(
        session, Subscriber, {r.subscriber_ref for r in rows if r.subscriber_id is None and r.subscriber_ref}
    )
    for r in rows:
        if r.subscriber_id is None and r.subscriber_ref in claimed_subscribers:
            r.subscriber_id = r.subscriber_ref
    by_email = await _subscribers_by_email(
        session, (r.email for r in rows if r.subscriber_id is None and r.email)
    )
    for r in rows:
        if r.subscriber_id is None and r.email:
            r.subscriber_id = by_email.get(r.email)
    claimed_campaigns = await _existing(
        session, Campaign, {r.campaign_ref for r in rows if r.delivery_id is None and r.campaign_ref}
    )

    # A campaign and a subscriber name exactly one delivery; otherwise the latest one sent to them.
    pairs: set[tuple[int, int]] = set()
    for r in rows:
        if r.delivery_id is None and r.campaign_ref in claimed_campaigns and r.subscriber_id is not None:
            assert r.campaign_ref is not None
            pairs.add((r.campaign_ref, r.subscriber_id))
    by_pair = await _for_campaign_and_subscriber(session, pairs)
    for r in rows:
        if r.delivery_id is None and r.subscriber_id is not None and r.campaign_ref is not None:
            if (d := by_pair.get((r.campaign_ref, r.subscriber_id))) is not None:
                _attach(r, d)
    # Without a (valid) campaign claim, the latest delivery sent to the subscriber.
    def unclaimed(r: Pending) -> bool:
        return r.delivery_id is None and r.subscriber_id is not None and r.campaign_ref not in claimed_campaigns

    latest = await _latest_for_subscribers(session, (r.subscriber_id for r in rows if unclaimed(r)))  # type: ignore[misc]
    for r in rows:
        if unclaimed(r) and (d := latest.get(r.subscriber_id)) is not None:  # type: ignore[arg-type]
            _attach(r, d)
        if r.delivery_id is None and r.campaign_id is None and r.campaign_ref in claimed_campaigns:
            r.campaign_id = r.campaign_ref
