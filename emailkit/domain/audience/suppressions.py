"""The suppression list: addresses no campaign or transactional message is ever sent to.

Entries are keyed by the sha256 of the lower-cased address, so an erased entry (address cleared, hash
kept) still matches the address if it comes back, and `ensure_not_erased` refuses that address to a new
subscriber. Removing an entry does not re-enable a subscriber that the policy blocklisted; that is a
separate, deliberate ``updateSubscriber(status: ENABLED)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import String, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import one_of
from emailkit.db.tables.audience import Suppression, SuppressionReason
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, normalize_email, raise_if

DETAIL_MAX = 2000
API_SOURCE = "api"


def email_hash(email: str) -> str:
    """sha256 hex of the trimmed, lower-cased address (what is kept of a suppression after erasure)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


async def is_suppressed(session: AsyncSession, email: str) -> bool:
    """Whether ``email`` is on the suppression list (one indexed look-up)."""
    stmt = select(exists().where(Suppression.email_hash == email_hash(email)))
    return bool((await session.execute(stmt)).scalar())


async def suppressed_among(session: AsyncSession, emails: Sequence[str]) -> set[str]:
    """The given addresses (as lower-cased) that are suppressed."""
    by_hash = {email_hash(e): e.strip().lower() for e in emails}
    if not by_hash:
        return set()
    stmt = select(Suppression.email_hash).where(
        one_of(session, Suppression.email_hash, list(by_hash), String())
    )
    return {by_hash[h] for h in (await session.execute(stmt)).scalars()}


async def is_erased(session: AsyncSession, email: str) -> bool:
    """Whether this (normalised) address belonged to someone who was erased."""
    stmt = select(exists().where(Suppression.email_hash == email_hash(email), Suppression.email.is_(None)))
    return bool((await session.execute(stmt)).scalar())


async def ensure_not_erased(session: AsyncSession, email: str, field: str = "email") -> None:
    """Refuse to store an erased person's address again (call before creating a subscriber)."""
    if await is_erased(session, email):
        raise DomainError.single(
            ErrorCode.ERASED,
            "This address belongs to a person whose data was erased; it cannot be added again",
            field,
        )


async def get_by_email(session: AsyncSession, email: str) -> Suppression | None:
    stmt = select(Suppression).where(Suppression.email_hash == email_hash(email))
    return (await session.execute(stmt)).scalar_one_or_none()


async def add_suppression(
    session: AsyncSession,
    email: str,
    reason: SuppressionReason = SuppressionReason.MANUAL,
    *,
    detail: str | None = None,
    source: str = API_SOURCE,
) -> Suppression:
    errors: list[FieldError] = []
    check_length(errors, "detail", detail, DETAIL_MAX)
    raise_if(errors)
    address = normalize_email(email)
    existing = await get_by_email(session, address)
    if existing is not None:
        # Also when the entry was erased (address cleared): its hash still covers this address.
        raise DomainError.single(ErrorCode.ALREADY_SUPPRESSED, "This address is already suppressed", "email")
    row = Suppression(
        email=address,
        email_hash=email_hash(address),
        reason=reason,
        detail=detail,
        source=source,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row


def _not_found(field: str) -> DomainError:
    return DomainError.single(ErrorCode.SUPPRESSION_NOT_FOUND, "No such suppression", field)


async def remove_suppression(
    session: AsyncSession, *, suppression_id: int | None = None, email: str | None = None
) -> Suppression:
    """Delete one entry, named by id or by address (exactly one of them)."""
    if (suppression_id is None) == (email is None):
        raise DomainError.single(ErrorCode.INVALID_INPUT, "Give either id or email", None)
    if suppression_id is not None:
        row = await session.get(Suppression, suppression_id)
        field = "id"
    else:
        assert email is not None
        if not email.strip():
            raise DomainError.single(ErrorCode.REQUIRED, "Email is required", "email")
        row = await get_by_email(session, email)
        field = "email"
    if row is None:
        raise _not_found(field)
    await session.delete(row)
    await session.flush()
    return row


async def find_suppressions(
    session: AsyncSession, *, first: int, after: int | None, search: str | None = None
) -> Page[Suppression]:
    """Newest first; ``search`` matches part of the address, or a whole one even once it was erased."""
    stmt = select(Suppression)
    if search and search.strip():
        term = search.strip().lower()
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(
            or_(
                func.lower(Suppression.email).like(f"%{escaped}%", escape="\\"),
                Suppression.email_hash == email_hash(term),
            )
        )
    return await keyset_page(session, stmt, Suppression.id, first=first, after=after, descending=True)


async def suppressions_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Suppression]:
    rows = (await session.execute(select(Suppression).where(Suppression.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}
