"""A workspace's quotas: subscribers it may have, campaign emails it may send per UTC day.

Hitting one is never a silent drop: adding subscribers beyond the quota is refused with QUOTA_EXCEEDED (an
import fails as a whole, saying so); a campaign that reaches the daily quota waits for the next day with a
statusReason, and its batches run again then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.tenancy import Workspace
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode


async def _subscriber_quota(session: AsyncSession) -> tuple[int, int] | None:
    """(quota, subscribers now) of the workspace in scope, or None without a quota. With a quota set, the
    workspace's row is locked until the caller's transaction ends, so two concurrent writers cannot both take
    the last places."""
    workspace_id = current_workspace_id()
    quota = (
        await session.execute(
            select(Workspace.quota_subscribers).where(Workspace.id == workspace_id).with_for_update()
        )
    ).scalar_one_or_none()
    if quota is None:
        return None
    count = select(func.count()).select_from(Subscriber).where(Subscriber.workspace_id == workspace_id)
    return quota, int((await session.execute(count)).scalar_one())


async def ensure_room_for_subscribers(
    session: AsyncSession, adding: int, *, field: str | None = None
) -> None:
    """Refuse (QUOTA_EXCEEDED) when the workspace in scope would have more subscribers than its quota after
    `adding` more."""
    found = await _subscriber_quota(session)
    if found is None or adding <= 0:
        return
    quota, have = found
    if have + adding > quota:
        raise DomainError.single(
            ErrorCode.QUOTA_EXCEEDED,
            f"This workspace may have at most {quota:,} subscribers; it has {have:,}"
            + (f" and this would add {adding:,}" if adding > 1 else ""),
            field,
        )


async def ensure_within_subscriber_quota(session: AsyncSession, *, added: int) -> None:
    """After a bulk insert of `added` subscribers (an import, in its transaction): refuse (QUOTA_EXCEEDED) when
    the workspace now has more than its quota, so the caller rolls the whole insert back."""
    found = await _subscriber_quota(session)
    if found is None:
        return
    quota, have = found
    if have > quota:
        raise DomainError.single(
            ErrorCode.QUOTA_EXCEEDED,
            f"This workspace may have at most {quota:,} subscribers; this import would add {added:,} "
            f"to the {have - added:,} it has",
        )


@dataclass(frozen=True)
class Allowance:
    """How many of the emails asked for may go out now; when none may, when they may again."""

    granted: int
    quota: int | None
    next_day: datetime | None = None

    @property
    def reason(self) -> str:
        return (
            f"The workspace's quota of {self.quota:,} campaign emails per day is reached; sending continues "
            "after 00:00 UTC"
        )


def _next_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=now.tzinfo)


async def emails_left_today(session: AsyncSession, now: datetime) -> tuple[int, int] | None:
    """(quota, emails it still allows today) of the workspace in scope, or None without a quota; with a quota,
    the workspace's row is locked until the caller's transaction ends (then :func:`count_emails`)."""
    row = (
        await session.execute(
            select(Workspace.quota_emails_per_day, Workspace.usage_day, Workspace.usage_emails)
            .where(Workspace.id == current_workspace_id())
            .with_for_update()
        )
    ).one_or_none()
    if row is None or row.quota_emails_per_day is None:
        return None
    used = row.usage_emails if row.usage_day == now.date() else 0
    return row.quota_emails_per_day, max(0, row.quota_emails_per_day - used)


async def count_emails(session: AsyncSession, n: int, now: datetime) -> None:
    """Add `n` campaign emails to today's usage of the workspace in scope."""
    today: date = now.date()
    await session.execute(
        update(Workspace)
        .where(Workspace.id == current_workspace_id())
        .values(
            usage_day=today,
            usage_emails=case((Workspace.usage_day == today, Workspace.usage_emails + n), else_=n),
        )
    )


async def reserve_emails(session: AsyncSession, wanted: int, *, now: datetime | None = None) -> Allowance:
    """Count up to `wanted` campaign emails against today's quota of the workspace in scope; returns how many
    may go out (all of them when no quota is set). One locked read and one write per call, and only for a
    workspace with a quota: call it per chunk of a batch, not per email."""
    now = now or utcnow()
    found = await emails_left_today(session, now)
    if found is None:
        return Allowance(granted=wanted, quota=None)
    quota, left = found
    granted = max(0, min(wanted, left))
    await count_emails(session, granted, now)
    return Allowance(
        granted=granted,
        quota=quota,
        next_day=None if granted == wanted else _next_midnight(now),
    )
