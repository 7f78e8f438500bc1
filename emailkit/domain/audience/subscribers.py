"""Subscribers and their list subscriptions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, ColumnElement, Insert, exists, literal, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import upsert
from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.audience import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.types import UTCDateTime, utcnow
from emailkit.domain.audience.lists import new_subscription_status, require_lists
from emailkit.domain.audience.subscriber_fields import NAME_MAX, attribute_errors
from emailkit.domain.audience.suppressions import ensure_not_erased
from emailkit.domain.automation import entry as flow_entry
from emailkit.domain.automation.erasure import person_erased
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.quotas import ensure_room_for_subscribers
from emailkit.domain.transactions import FOREIGN_KEY_VIOLATION, constraint_name, sqlstate
from emailkit.domain.validation import check_length, normalize_email, raise_if
from emailkit.domain.webhooks_out import emitters

# Bounds one bulk statement (subscribers x lists rows) and keeps IN lists well under driver parameter limits.
BULK_MAX_SUBSCRIBERS = 1000
BULK_MAX_LISTS = 100


# --- validation -------------------------------------------------------------------------------------------


def _collect_email(errors: list[FieldError], raw: str) -> str | None:
    try:
        return normalize_email(raw)
    except DomainError as exc:
        errors.extend(exc.errors)
        return None


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def _check_count(
    errors: list[FieldError], field: str, ids: Sequence[int], limit: int, *, required: bool
) -> None:
    if required and not ids:
        errors.append(FieldError(field, "At least one ID is required", ErrorCode.REQUIRED))
    elif len(ids) > limit:
        errors.append(FieldError(field, f"At most {limit} IDs per call", ErrorCode.INVALID_INPUT))


def _blocklisted_error(field: str) -> FieldError:
    return FieldError(field, "Blocklisted subscribers cannot be subscribed to lists", ErrorCode.INVALID_STATE)


# --- reads ------------------------------------------------------------------------------------------------


async def get_subscriber(session: AsyncSession, subscriber_id: int) -> Subscriber:
    row = await session.get(Subscriber, subscriber_id)
    if row is None:
        raise NotFound("Subscriber", code=ErrorCode.SUBSCRIBER_NOT_FOUND)
    return row


async def get_by_email(session: AsyncSession, email: str) -> Subscriber | None:
    """The subscriber with this address (compared as stored: normalised, lower-cased), if any."""
    try:
        normalized = normalize_email(email)
    except DomainError:
        return None
    return (
        await session.execute(select(Subscriber).where(Subscriber.email == normalized))
    ).scalar_one_or_none()


async def find_subscribers(
    session: AsyncSession,
    *,
    first: int,
    after: int | None,
    search: str | None = None,
    list_id: int | None = None,
    status: SubscriberStatus | None = None,
    subscription_status: SubscriptionStatus | None = None,
) -> Page[Subscriber]:
    """Subscribers oldest first. ``list_id`` keeps those with a subscription to that list in any state,
    narrowed to one state by ``subscription_status``."""
    stmt = select(Subscriber)
    if search and search.strip():
        term = search.strip().lower()
        stmt = stmt.where(
            or_(
                Subscriber.email.contains(term, autoescape=True),
                Subscriber.name.icontains(term, autoescape=True),
            )
        )
    if status is not None:
        stmt = stmt.where(Subscriber.status == status)
    if list_id is not None or subscription_status is not None:
        conds: list[ColumnElement[bool]] = [Subscription.subscriber_id == Subscriber.id]
        if list_id is not None:
            conds.append(Subscription.list_id == list_id)
        if subscription_status is not None:
            conds.append(Subscription.status == subscription_status)
        stmt = stmt.where(exists().where(*conds))
    return await keyset_page(session, stmt, Subscriber.id, first=first, after=after)


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


# --- writes -----------------------------------------------------------------------------------------------


async def _email_taken(session: AsyncSession, email: str, *, exclude_id: int | None = None) -> bool:
    stmt = select(Subscriber.id).where(Subscriber.email == email)
    if exclude_id is not None:
        stmt = stmt.where(Subscriber.id != exclude_id)
    return (await session.execute(stmt.limit(1))).first() is not None


def _duplicate(email: str) -> DomainError:
    return DomainError.single(
        ErrorCode.DUPLICATE_EMAIL, f"A subscriber with email {email} already exists", "email"
    )


async def _flush_unique_email(session: AsyncSession, email: str) -> None:
    # The pre-check answers the common case with a clear error; the unique index settles concurrent writers.
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _duplicate(email) from exc


async def create_subscriber(
    session: AsyncSession,
    email: str,
    name: str | None = None,
    attributes: object = None,
    list_ids: Sequence[int] = (),
    status: SubscriberStatus | None = None,
    subscription_status: SubscriptionStatus | None = None,
) -> Subscriber:
    """Create a subscriber, optionally subscribed to lists (see `subscribe_to_lists` for the statuses)."""
    errors: list[FieldError] = []
    normalized = _collect_email(errors, email)
    check_length(errors, "name", name, NAME_MAX)
    if attributes is not None:
        errors.extend(attribute_errors(attributes))
    list_ids = _unique(list_ids)
    _check_count(errors, "listIds", list_ids, BULK_MAX_LISTS, required=False)
    status = status or SubscriberStatus.ENABLED
    if (
        status is SubscriberStatus.BLOCKLISTED
        and list_ids
        and subscription_status is not SubscriptionStatus.UNSUBSCRIBED
    ):
        errors.append(_blocklisted_error("listIds"))
    raise_if(errors)
    assert normalized is not None
    await require_lists(session, list_ids, hold=True)
    if await _email_taken(session, normalized):
        raise _duplicate(normalized)
    await ensure_not_erased(session, normalized)
    await ensure_room_for_subscribers(session, 1, field="email")

    row = Subscriber(
        email=normalized,
        name=(name or "").strip(),
        attributes=dict(attributes) if isinstance(attributes, dict) else {},
        status=status,
    )
    session.add(row)
    await _flush_unique_email(session, normalized)
    if list_ids:
        await _subscribe(session, [row.id], list_ids, subscription_status)
    await emitters.subscriber_created(session, row)
    return row


async def update_subscriber(
    session: AsyncSession,
    subscriber_id: int,
    *,
    email: str | None = None,
    name: str | None = None,
    attributes: object = None,
    status: SubscriberStatus | None = None,
) -> Subscriber:
    """Change the given fields (None leaves a field as is; attributes are replaced as a whole).

    Blocklisting a subscriber unsubscribes them from every list."""
    errors: list[FieldError] = []
    normalized = _collect_email(errors, email) if email is not None else None
    check_length(errors, "name", name, NAME_MAX)
    if attributes is not None:
        errors.extend(attribute_errors(attributes))
    raise_if(errors)
    row = await get_subscriber(session, subscriber_id)
    if normalized is not None and normalized != row.email:
        if await _email_taken(session, normalized, exclude_id=row.id):
            raise _duplicate(normalized)
        await ensure_not_erased(session, normalized)
        row.email = normalized
    if name is not None:
        row.name = name.strip()
    if isinstance(attributes, dict):
        row.attributes = dict(attributes)
    if status is not None:
        row.status = status
    await _flush_unique_email(session, row.email)
    await emitters.subscriber_updated(session, row)
    if status is SubscriberStatus.BLOCKLISTED:
        await _unsubscribe_all(session, row)
    return row


async def delete_subscriber(session: AsyncSession, subscriber_id: int) -> Subscriber:
    row = await get_subscriber(session, subscriber_id)
    # Subscriptions go with it through the ON DELETE CASCADE foreign key; flow runs end here.
    await person_erased(session, row.id, reason="deleted")
    await session.delete(row)
    await session.flush()
    return row


async def _require_subscribers(session: AsyncSession, ids: Sequence[int]) -> list[Subscriber]:
    found = await subscribers_by_ids(session, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise DomainError.single(
            ErrorCode.SUBSCRIBER_NOT_FOUND,
            f"{len(missing)} of the given subscribers do not exist",
            "subscriberIds",
        )
    return [found[i] for i in ids]


def _subscribe_statement(
    session: AsyncSession,
    subscriber_ids: Sequence[int],
    list_ids: Sequence[int],
    status: SubscriptionStatus | None,
    now: datetime,
) -> Insert:
    """One INSERT ... SELECT ... ON CONFLICT for every (subscriber, list) pair; the rows it writes are stamped
    `now` (and only those: a pair it leaves alone keeps its stamp).

    Without an explicit status, a new or previously UNSUBSCRIBED subscription becomes UNCONFIRMED on a
    DOUBLE opt-in list and CONFIRMED on a SINGLE one, and a live subscription keeps its state."""
    # A Core INSERT ... SELECT: neither the session's workspace filter nor the column's default reaches it,
    # so both sides are held to the workspace here and its rows name it.
    workspace_id = current_workspace_id()
    pairs = (
        select(
            Subscriber.id,
            MailingList.id,
            new_subscription_status(status),
            literal(now, UTCDateTime()),
            literal(now, UTCDateTime()),
            literal(workspace_id, BigInteger()),
        )
        .select_from(Subscriber)
        .join(MailingList, true())
        .where(
            Subscriber.id.in_(subscriber_ids),
            MailingList.id.in_(list_ids),
            Subscriber.workspace_id == workspace_id,
            MailingList.workspace_id == workspace_id,
        )
    )
    table = Subscription.__table__
    stmt = upsert(session)(table).from_select(
        ["subscriber_id", "list_id", "status", "created_at", "updated_at", "workspace_id"], pairs
    )
    changes = (
        table.c.status == SubscriptionStatus.UNSUBSCRIBED
        if status is None
        else table.c.status != stmt.excluded.status
    )
    statement: Insert = stmt.on_conflict_do_update(
        index_elements=[table.c.subscriber_id, table.c.list_id],
        set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
        where=changes,
    )
    return statement


# The subscriptions' foreign keys, and the input field naming what they reference.
_REFERENCES: Final = {
    "fk_subscriptions_list_id_lists": ("listIds", ErrorCode.LIST_NOT_FOUND, "A list was deleted meanwhile"),
    "fk_subscriptions_subscriber_id_subscribers": (
        "subscriberIds",
        ErrorCode.SUBSCRIBER_NOT_FOUND,
        "A subscriber was deleted meanwhile",
    ),
}


async def _subscribe(
    session: AsyncSession,
    subscriber_ids: Sequence[int],
    list_ids: Sequence[int],
    status: SubscriptionStatus | None,
) -> None:
    """Run `_subscribe_statement`, and start the flows of the subscriptions it made sendable. The lists are
    locked, but a subscriber deleted after it was read and before its subscription was checked (READ
    COMMITTED) fails the foreign key: that is the caller's error, named."""
    now = utcnow()
    try:
        await session.execute(_subscribe_statement(session, subscriber_ids, list_ids, status, now))
        await flow_entry.subscribed(
            session,
            workspace_id=current_workspace_id(),
            list_ids=list_ids,
            changed_at=now,
            subscriber_ids=subscriber_ids,
        )
    except IntegrityError as exc:
        reference = _REFERENCES.get(constraint_name(exc) or "")
        if sqlstate(exc) == FOREIGN_KEY_VIOLATION and reference is not None:
            field, code, message = reference
            raise DomainError.single(code, message, field) from exc
        if "FOREIGN KEY constraint failed" in str(exc.orig):
            # SQLite names no constraint, but a failed statement leaves its transaction usable: look again.
            await require_lists(session, list_ids)
            await _require_subscribers(session, subscriber_ids)
        raise


def _bulk_errors(subscriber_ids: Sequence[int], list_ids: Sequence[int]) -> list[FieldError]:
    errors: list[FieldError] = []
    _check_count(errors, "subscriberIds", subscriber_ids, BULK_MAX_SUBSCRIBERS, required=True)
    _check_count(errors, "listIds", list_ids, BULK_MAX_LISTS, required=True)
    return errors


async def subscribe_to_lists(
    session: AsyncSession,
    subscriber_ids: Sequence[int],
    list_ids: Sequence[int],
    status: SubscriptionStatus | None = None,
) -> list[Subscriber]:
    """Subscribe every given subscriber to every given list; repeating the call changes nothing.

    An explicit ``status`` is set on every pair; without one see `_subscribe_statement`."""
    subscriber_ids, list_ids = _unique(subscriber_ids), _unique(list_ids)
    raise_if(_bulk_errors(subscriber_ids, list_ids))
    await require_lists(session, list_ids, hold=True)
    rows = await _require_subscribers(session, subscriber_ids)
    if status is not SubscriptionStatus.UNSUBSCRIBED and any(
        r.status is SubscriberStatus.BLOCKLISTED for r in rows
    ):
        raise_if([_blocklisted_error("subscriberIds")])
    await _subscribe(session, subscriber_ids, list_ids, status)
    return rows


async def unsubscribe_from_lists(
    session: AsyncSession,
    subscriber_ids: Sequence[int],
    list_ids: Sequence[int],
    *,
    source: str = "API",
) -> list[Subscriber]:
    """Mark the given subscriptions UNSUBSCRIBED (kept, not deleted, so the opt-out is remembered).

    Pairs that were never subscribed are left alone; repeating the call changes nothing. `source` says who
    asked, for the ``subscriber.unsubscribed`` webhook (API, PREFERENCES)."""
    subscriber_ids, list_ids = _unique(subscriber_ids), _unique(list_ids)
    raise_if(_bulk_errors(subscriber_ids, list_ids))
    await require_lists(session, list_ids)
    rows = await _require_subscribers(session, subscriber_ids)
    changed = await session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id.in_(subscriber_ids),
            Subscription.list_id.in_(list_ids),
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED, updated_at=utcnow())
        .returning(Subscription.subscriber_id, Subscription.list_id)
        .execution_options(synchronize_session=False)
    )
    left: dict[int, list[int]] = defaultdict(list)
    for subscriber_id, list_id in changed.all():
        left[subscriber_id].append(list_id)
    for row in rows:
        if row.id in left:
            await emitters.subscriber_unsubscribed(
                session,
                workspace_id=row.workspace_id,
                subscriber_id=row.id,
                email=row.email,
                list_ids=sorted(left[row.id]),
                source=source,
            )
    return rows


async def _unsubscribe_all(session: AsyncSession, row: Subscriber) -> None:
    changed = await session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id == row.id,
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED, updated_at=utcnow())
        .returning(Subscription.list_id)
        .execution_options(synchronize_session=False)
    )
    if changed.all():
        await emitters.subscriber_unsubscribed(
            session,
            workspace_id=row.workspace_id,
            subscriber_id=row.id,
            email=row.email,
            list_ids=None,
            source="BLOCKLIST",
        )
