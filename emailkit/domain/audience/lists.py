"""Mailing lists, and the status a list's opt-in gives a new subscription."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import MailingList, OptIn, Subscription, SubscriptionStatus, Visibility
from emailkit.db.tables.content import Template, TemplateKind
from emailkit.domain.audience import timezones
from emailkit.domain.errors import ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.senders.store import require_sender
from emailkit.domain.validation import check_length, raise_if, require


@dataclass
class ListInput:
    name: str | None = None
    description: str | None = None
    optin: OptIn | None = None
    visibility: Visibility | None = None
    tags: list[str] | None = None
    # None keeps the current one; 0 resets to the built-in confirmation mail.
    optin_template_id: int | None = None
    # An IANA name; None keeps the current one, "" removes it (the instance's default applies).
    default_timezone: str | None = None
    # The sender of its campaigns that name none; None keeps the current one, 0 removes it.
    sender_id: int | None = None


def _validate(data: ListInput, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
    check_length(errors, "name", data.name, 255)
    check_length(errors, "description", data.description, 10_000)
    if data.tags is not None:
        if len(data.tags) > 50:
            errors.append(FieldError("tags", "At most 50 tags", ErrorCode.INVALID_INPUT))
        for tag in data.tags:
            if not tag.strip() or len(tag) > 64:
                errors.append(FieldError("tags", "Tags must be 1-64 characters", ErrorCode.INVALID_INPUT))
                break
    if data.default_timezone and not timezones.is_valid(data.default_timezone):
        errors.append(timezones.error("defaultTimezone", data.default_timezone))
    return errors


def _clean_tags(tags: list[str]) -> list[str]:
    return sorted({t.strip() for t in tags})


async def _check_optin_template(session: AsyncSession, template_id: int | None) -> None:
    if not template_id:
        return
    template = await session.get(Template, template_id)
    if template is None:
        raise_if([FieldError("optinTemplateId", "Template not found", ErrorCode.TEMPLATE_NOT_FOUND)])
    elif template.kind is not TemplateKind.TRANSACTIONAL:
        raise_if(
            [
                FieldError(
                    "optinTemplateId",
                    "The opt-in mail needs a TRANSACTIONAL template",
                    ErrorCode.INVALID_INPUT,
                )
            ]
        )


async def create_list(session: AsyncSession, data: ListInput) -> MailingList:
    raise_if(_validate(data, creating=True))
    await _check_optin_template(session, data.optin_template_id)
    if data.sender_id:
        await require_sender(session, data.sender_id)
    assert data.name is not None
    row = MailingList(
        name=data.name.strip(),
        description=data.description or "",
        optin=data.optin or OptIn.SINGLE,
        visibility=data.visibility or Visibility.PRIVATE,
        tags=_clean_tags(data.tags or []),
        optin_template_id=data.optin_template_id or None,
        default_timezone=data.default_timezone or None,
        sender_id=data.sender_id or None,
    )
    session.add(row)
    await session.flush()
    return row


async def get_list(session: AsyncSession, list_id: int) -> MailingList:
    row = await session.get(MailingList, list_id)
    if row is None:
        raise NotFound("List", code=ErrorCode.LIST_NOT_FOUND)
    return row


async def update_list(session: AsyncSession, list_id: int, data: ListInput) -> MailingList:
    raise_if(_validate(data, creating=False))
    await _check_optin_template(session, data.optin_template_id)
    row = await get_list(session, list_id)
    if data.name is not None:
        row.name = data.name.strip()
    if data.description is not None:
        row.description = data.description
    if data.optin is not None:
        row.optin = data.optin
    if data.visibility is not None:
        row.visibility = data.visibility
    if data.tags is not None:
        row.tags = _clean_tags(data.tags)
    if data.optin_template_id is not None:
        row.optin_template_id = data.optin_template_id or None
    if data.default_timezone is not None:
        row.default_timezone = data.default_timezone or None
    if data.sender_id is not None:
        if data.sender_id:
            await require_sender(session, data.sender_id)
        row.sender_id = data.sender_id or None
    await session.flush()
    return row


async def delete_list(session: AsyncSession, list_id: int) -> MailingList:
    row = await get_list(session, list_id)
    # The list row goes first and its subscriptions with it (ON DELETE CASCADE; a trigger on PostgreSQL): a
    # delete that locked subscriptions and then waited for an import holding the list could deadlock with it.
    await session.delete(row)
    await session.flush()
    return row


async def find_lists(
    session: AsyncSession, *, first: int, after: int | None, search: str | None = None
) -> Page[MailingList]:
    stmt = select(MailingList)
    if search:
        pattern = f"%{search.strip().lower()}%"
        stmt = stmt.where(
            or_(func.lower(MailingList.name).like(pattern), func.lower(MailingList.description).like(pattern))
        )
    return await keyset_page(session, stmt, MailingList.id, first=first, after=after)


async def lists_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, MailingList]:
    rows = (await session.execute(select(MailingList).where(MailingList.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def subscriber_counts(session: AsyncSession, list_ids: Sequence[int]) -> dict[int, int]:
    """Active (not unsubscribed) subscribers per list."""
    stmt = (
        select(Subscription.list_id, func.count())
        .where(Subscription.list_id.in_(list_ids), Subscription.status != SubscriptionStatus.UNSUBSCRIBED)
        .group_by(Subscription.list_id)
    )
    counts = {lid: 0 for lid in list_ids}
    for lid, n in (await session.execute(stmt)).all():
        counts[lid] = int(n)
    return counts


async def require_lists(
    session: AsyncSession, ids: Sequence[int], field: str = "listIds", *, hold: bool = False
) -> None:
    """Raise a LIST_NOT_FOUND field error naming the ids that do not exist.

    `hold`: lock the lists against deletion (FOR KEY SHARE; PostgreSQL) until the transaction ends."""
    wanted = set(ids)
    if not wanted:
        return
    query = select(MailingList.id).where(MailingList.id.in_(wanted))
    if hold:
        query = query.with_for_update(read=True, key_share=True)
    found = set((await session.execute(query)).scalars())
    missing = sorted(wanted - found)
    if missing:
        raise_if(
            [FieldError(field, f"{len(missing)} of the given lists do not exist", ErrorCode.LIST_NOT_FOUND)]
        )


def new_subscription_status(status: SubscriptionStatus | None) -> ColumnElement[Any]:
    """A new subscription's status, selected beside its list: `status` when one is given, else UNCONFIRMED on a
    DOUBLE opt-in list (it waits for confirmation) and CONFIRMED on a SINGLE one."""
    if status is not None:
        return literal(status.value)
    return case(
        (MailingList.optin == OptIn.DOUBLE, literal(SubscriptionStatus.UNCONFIRMED.value)),
        else_=literal(SubscriptionStatus.CONFIRMED.value),
    )
