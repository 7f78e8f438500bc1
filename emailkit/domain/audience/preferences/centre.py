"""The preference centre behind the signed link of a campaign mail: the recipient's PUBLIC lists with their
status, joining and leaving them, and what the unsubscribe link of that mail covers.

The link proves that its holder received the mail at the address, so joining a list from here needs no
further confirmation (the same proof a double opt-in mail asks for). Private lists are never shown or
changed one by one; "unsubscribe from everything" and the mail's own unsubscribe cover them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Visibility,
)
from emailkit.db.tables.sending import Delivery
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.preferences import scope
from emailkit.domain.errors import DomainError, ErrorCode

BLOCKED = (
    "This address no longer receives our email (for example after a bounce or a spam report), "
    "so it cannot join lists."
)


@dataclass(frozen=True, slots=True)
class ListChoice:
    id: int
    name: str
    description: str
    # Receives this list's mail: CONFIRMED, or UNCONFIRMED on a single opt-in list.
    subscribed: bool
    # Asked to confirm (UNCONFIRMED on a double opt-in list): joining from here confirms.
    awaiting_confirmation: bool


@dataclass(frozen=True, slots=True)
class Preferences:
    email: str
    subscriber_id: int
    blocklisted: bool
    # Nothing left to leave through this mail's unsubscribe: every list in its scope is UNSUBSCRIBED.
    unsubscribed: bool
    lists: list[ListChoice]


async def workspace_of_delivery(db: Database, delivery_id: int) -> Workspace | None:
    """The workspace the signed link's delivery belongs to (the link carries no key), looked up across all
    workspaces, with its row (the page shows its branding); None when there is no such delivery or its
    workspace is archived (whose public pages are gone)."""
    with all_workspaces():
        async with db.read_session() as session:
            found = await session.execute(
                select(Workspace)
                .join(Delivery, Delivery.workspace_id == Workspace.id)
                .where(Delivery.id == delivery_id, Workspace.status == WorkspaceStatus.ACTIVE)
            )
            return found.scalar_one_or_none()


async def recipient_of(session: AsyncSession, delivery_id: int) -> tuple[str, int | None] | None:
    """(address, subscriber id or None once erased) of a delivery; None when there is no such delivery."""
    row = (
        await session.execute(
            select(Delivery.email, Delivery.subscriber_id).where(Delivery.id == delivery_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def preferences_of(session: AsyncSession, delivery_id: int, subscriber_id: int) -> Preferences | None:
    """What the preference centre shows; None when the subscriber is gone."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    delivery_scope = (await scope.scopes_of(session, [delivery_id])).get(delivery_id, scope.EVERY_LIST)
    rows = await session.execute(
        select(
            MailingList.id, MailingList.name, MailingList.description, MailingList.optin, Subscription.status
        )
        .outerjoin(
            Subscription,
            and_(Subscription.list_id == MailingList.id, Subscription.subscriber_id == subscriber_id),
        )
        .where(MailingList.visibility == Visibility.PUBLIC)
        .order_by(MailingList.name, MailingList.id)
    )
    lists = [
        ListChoice(
            id=list_id,
            name=name,
            description=description,
            subscribed=status is SubscriptionStatus.CONFIRMED
            or (status is SubscriptionStatus.UNCONFIRMED and optin is OptIn.SINGLE),
            awaiting_confirmation=status is SubscriptionStatus.UNCONFIRMED and optin is OptIn.DOUBLE,
        )
        for list_id, name, description, optin, status in rows
    ]
    return Preferences(
        email=subscriber.email,
        subscriber_id=subscriber.id,
        blocklisted=subscriber.status is SubscriberStatus.BLOCKLISTED,
        unsubscribed=not await scope.still_subscribed(session, subscriber.id, delivery_scope),
        lists=lists,
    )


async def _public_list(session: AsyncSession, list_id: int) -> MailingList:
    row = await session.get(MailingList, list_id)
    if row is None or row.visibility is not Visibility.PUBLIC:
        raise DomainError.single(ErrorCode.LIST_NOT_FOUND, "There is no such list to choose", "list")
    return row


async def join(session: AsyncSession, subscriber_id: int, list_id: int) -> MailingList:
    """Subscribe (CONFIRMED) to a PUBLIC list; refused for a blocklisted subscriber."""
    row = await _public_list(session, list_id)
    subscriber = await subscribers.get_subscriber(session, subscriber_id)
    if subscriber.status is SubscriberStatus.BLOCKLISTED:
        raise DomainError.single(ErrorCode.INVALID_STATE, BLOCKED, "list")
    await subscribers.subscribe_to_lists(session, [subscriber_id], [list_id], SubscriptionStatus.CONFIRMED)
    return row


async def leave(session: AsyncSession, subscriber_id: int, list_id: int) -> MailingList:
    """Mark the subscription to a PUBLIC list UNSUBSCRIBED (nothing happens when there is none)."""
    row = await _public_list(session, list_id)
    await subscribers.unsubscribe_from_lists(session, [subscriber_id], [list_id], source="PREFERENCES")
    return row
