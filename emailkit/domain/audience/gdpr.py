"""Data-subject requests: everything held about a subscriber, and erasure.

Erasure deletes the subscriber (and with it their subscriptions), keeps the rows that campaign totals are
made of with the personal parts removed (deliveries get a placeholder address and lose the link; events
lose address, IP, user agent, provider metadata, custom event properties and free text), and keeps only the
sha256 of the address in the suppression list, so the address cannot be imported or created again without
someone noticing (`suppressions.ensure_not_erased`). Campaign counters are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, case, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import MailingList, Subscription, Suppression, SuppressionReason
from emailkit.db.tables.feedback import Event
from emailkit.db.tables.sending import Campaign, Delivery
from emailkit.db.types import utcnow
from emailkit.domain.audience.subscribers import get_subscriber
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.automation.erasure import person_erased
from emailkit.domain.webhooks_out import emitters

# Reserved TLD (RFC 2606): a placeholder that can never be a real recipient.
ERASED_EMAIL: Final = "erased@erased.invalid"
ERASURE_SOURCE: Final = "erasure"
ERASED_TEXT: Final = "[erased]"

GlobalId = Callable[[str, int], str]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _default_id(type_name: str, pk: int) -> str:
    return f"{type_name}:{pk}"


def _of_subscriber(subscriber_id: int, email: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Deliveries and events about this person: linked by id, or addressed to them without a link
    (transactional mail, events the correlation could not tie to a subscriber)."""
    return (
        or_(Delivery.subscriber_id == subscriber_id, Delivery.email == email),
        or_(Event.subscriber_id == subscriber_id, Event.email == email),
    )


# --- export -----------------------------------------------------------------------------------------------


async def export_subscriber_data(
    session: AsyncSession, subscriber_id: int, *, global_id: GlobalId = _default_id
) -> dict[str, Any]:
    """Everything stored about one subscriber, as a JSON-ready document (ids as `global_id` renders them)."""
    row = await get_subscriber(session, subscriber_id)
    deliveries_of, events_of = _of_subscriber(row.id, row.email)
    subscriptions = await _subscriptions(session, row.id, global_id)
    deliveries = await _deliveries(session, deliveries_of, global_id)
    events = await _events(session, events_of, global_id)
    suppression = await _suppression(session, row.email)
    return {
        "exportedAt": utcnow().isoformat(),
        "profile": {
            "id": global_id("Subscriber", row.id),
            "email": row.email,
            "name": row.name,
            "status": row.status.value,
            "createdAt": _iso(row.created_at),
            "updatedAt": _iso(row.updated_at),
        },
        "attributes": dict(row.attributes or {}),
        "subscriptions": subscriptions,
        "deliveries": deliveries,
        "events": events,
        "suppression": suppression,
    }


async def _subscriptions(
    session: AsyncSession, subscriber_id: int, global_id: GlobalId
) -> list[dict[str, Any]]:
    rows = (
        await session.execute(
            select(Subscription, MailingList.name)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscription.subscriber_id == subscriber_id)
            .order_by(Subscription.list_id)
        )
    ).all()
    return [
        {
            "list": {"id": global_id("MailingList", sub.list_id), "name": list_name},
            "status": sub.status.value,
            "createdAt": _iso(sub.created_at),
            "updatedAt": _iso(sub.updated_at),
        }
        for sub, list_name in rows
    ]


async def _deliveries(
    session: AsyncSession, deliveries_of: ColumnElement[bool], global_id: GlobalId
) -> list[dict[str, Any]]:
    rows = (
        await session.execute(
            select(Delivery, Campaign.name, Campaign.subject)
            .outerjoin(Campaign, Campaign.id == Delivery.campaign_id)
            .where(deliveries_of)
            .order_by(Delivery.id)
        )
    ).all()
    return [
        {
            "id": global_id("Delivery", d.id),
            "campaign": (
                {"id": global_id("Campaign", d.campaign_id), "name": name, "subject": subject}
                if d.campaign_id is not None
                else None
            ),
            "email": d.email,
            "status": d.status.value,
            "skipReason": d.skip_reason,
            # The lists it reached them through (what its unsubscribe link leaves); null when not recorded.
            "viaLists": (
                [global_id("MailingList", i) for i in d.via_list_ids] if d.via_list_ids is not None else None
            ),
            "provider": d.provider,
            "providerMessageId": d.provider_message_id,
            "attempts": d.attempts,
            "lastError": d.last_error,
            "createdAt": _iso(d.created_at),
            "sentAt": _iso(d.sent_at),
        }
        for d, name, subject in rows
    ]


async def _events(
    session: AsyncSession, events_of: ColumnElement[bool], global_id: GlobalId
) -> list[dict[str, Any]]:
    rows = (
        (await session.execute(select(Event).where(events_of).order_by(Event.occurred_at, Event.id)))
        .scalars()
        .all()
    )
    return [
        {
            "type": e.type.value,
            "bounceType": e.bounce_type.value if e.bounce_type is not None else None,
            "occurredAt": _iso(e.occurred_at),
            "provider": e.provider,
            "campaign": global_id("Campaign", e.campaign_id) if e.campaign_id is not None else None,
            "email": e.email,
            "url": e.url,
            "userAgent": e.user_agent,
            "ip": e.ip,
            "reason": e.reason,
            "metadata": e.meta,
            "name": e.name,
            "properties": e.properties,
        }
        for e in rows
    ]


async def _suppression(session: AsyncSession, email: str) -> dict[str, Any] | None:
    suppression = (
        await session.execute(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    ).scalar_one_or_none()
    if suppression is None:
        return None
    return {
        "reason": suppression.reason.value,
        "source": suppression.source,
        "detail": suppression.detail,
        "createdAt": _iso(suppression.created_at),
    }


# --- erasure ----------------------------------------------------------------------------------------------


def _without_address(text: str | None, email: str) -> str | None:
    if text is None:
        return None
    return re.sub(re.escape(email), ERASED_TEXT, text, flags=re.IGNORECASE)


async def erase_subscriber(session: AsyncSession, subscriber_id: int) -> int:
    """Remove a subscriber's personal data; returns the erased subscriber's id."""
    row = await get_subscriber(session, subscriber_id)
    email = row.email
    deliveries_of, events_of = _of_subscriber(row.id, email)
    await _erase_from_deliveries(session, deliveries_of, email)
    await _erase_from_events(session, events_of, email)
    await _keep_only_the_hash(session, email)
    await person_erased(session, row.id)
    # Subscriptions go with the subscriber (ON DELETE CASCADE).
    workspace_id = row.workspace_id
    await session.delete(row)
    await session.flush()
    await emitters.subscriber_erased(session, workspace_id=workspace_id, subscriber_id=subscriber_id)
    return subscriber_id


async def _erase_from_deliveries(
    session: AsyncSession, deliveries_of: ColumnElement[bool], email: str
) -> None:
    """Deliveries keep their outcome for the campaign totals, not the address or the link to the subscriber."""
    # Error texts (SMTP replies, bounce diagnostics) often quote the address; the rest of them stays useful.
    with_errors = (
        await session.execute(
            select(Delivery.id, Delivery.last_error).where(deliveries_of, Delivery.last_error.is_not(None))
        )
    ).all()
    for delivery_id, last_error in with_errors:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(last_error=_without_address(last_error, email))
            .execution_options(synchronize_session=False)
        )
    await session.execute(
        update(Delivery)
        .where(deliveries_of)
        .values(email=ERASED_EMAIL, subscriber_id=None)
        .execution_options(synchronize_session=False)
    )


async def _erase_from_events(session: AsyncSession, events_of: ColumnElement[bool], email: str) -> None:
    """Events keep what happened and when, nothing that points to the person."""
    await session.execute(
        update(Event)
        .where(events_of)
        .values(
            email=None,
            subscriber_id=None,
            ip=None,
            user_agent=None,
            meta=None,
            reason=None,
            # A custom event's properties are whatever the sender's system knew about the person.
            properties=None,
            # A tracked link may carry the address in its query string.
            url=case(
                (func.lower(Event.url).contains(email, autoescape=True), literal(None)),
                else_=Event.url,
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def _keep_only_the_hash(session: AsyncSession, email: str) -> None:
    """The suppression list keeps the address's hash alone, so that it cannot come back unnoticed."""
    existing = (
        await session.execute(select(Suppression).where(Suppression.email_hash == email_hash(email)))
    ).scalar_one_or_none()
    if existing is not None:
        existing.email = None
        existing.detail = _without_address(existing.detail, email)
    else:
        session.add(
            Suppression(
                email=None,
                email_hash=email_hash(email),
                reason=SuppressionReason.MANUAL,
                detail=None,
                source=ERASURE_SOURCE,
                created_at=utcnow(),
            )
        )
