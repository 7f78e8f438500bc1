"""The daily limits a campaign's chunks are held to while a batch sends: its workspace's quota of campaign
emails and its sender's warm-up plan.

A chunk takes what every limit still allows today (each read under its row's lock and counted in one
transaction, so concurrent workers share it exactly); what it does not get stays QUEUED, the batch is given
back to run again after 00:00 UTC, and the campaign, still RUNNING, says why in its statusReason until sending
continues. A campaign with neither limit pays nothing: no statement at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign
from emailkit.db.types import utcnow
from emailkit.domain import quotas
from emailkit.domain.senders import warmup
from emailkit.domain.sending import lifecycle

# What a waiting campaign's statusReason starts with (quotas.Allowance.reason).
NOTE_PREFIX = "The workspace's quota of "
_NOTES = (NOTE_PREFIX, warmup.NOTE_PREFIX)


@dataclass
class Admitted:
    """How many of the chunk's recipients may go now; `wait` seconds until the rest may (None: all may)."""

    count: int
    wait: float | None = None


class DailyLimit(Protocol):
    async def left(self, session: AsyncSession, now: datetime) -> int | None:
        """What today still allows, its row locked for the transaction (None: no limit after all)."""

    async def count(self, session: AsyncSession, n: int, now: datetime) -> None: ...

    async def reason(self, session: AsyncSession, now: datetime, campaign_id: int, granted: int) -> str:
        """Why the campaign waits, once this limit held a chunk back (after `count`)."""


class WorkspaceQuota:
    quota = 0

    async def left(self, session: AsyncSession, now: datetime) -> int | None:
        found = await quotas.emails_left_today(session, now)
        if found is None:
            return None
        self.quota, left = found
        return left

    async def count(self, session: AsyncSession, n: int, now: datetime) -> None:
        await quotas.count_emails(session, n, now)

    async def reason(self, session: AsyncSession, now: datetime, campaign_id: int, granted: int) -> str:
        return quotas.Allowance(granted=granted, quota=self.quota).reason


class SenderWarmup:
    def __init__(self, sender_id: int, plan: warmup.WarmupPlan) -> None:
        self.sender_id = sender_id
        self.plan = plan
        self.today: warmup.Today | None = None

    async def left(self, session: AsyncSession, now: datetime) -> int | None:
        self.today = await warmup.locked_today(session, self.sender_id, self.plan, now)
        return self.today.remaining

    async def count(self, session: AsyncSession, n: int, now: datetime) -> None:
        await warmup.count(session, self.sender_id, n, now)
        assert self.today is not None
        self.today = warmup.Today(self.today.allowance, self.today.sent + n, self.today.resets_at)

    async def reason(self, session: AsyncSession, now: datetime, campaign_id: int, granted: int) -> str:
        today = self.today
        assert today is not None
        counts = (
            await session.execute(
                select(
                    Campaign.recipients_count
                    - Campaign.skipped_count
                    - Campaign.sent_count
                    - Campaign.failed_count
                    - Campaign.in_doubt_count
                ).where(Campaign.id == campaign_id)
            )
        ).scalar_one()
        # The chunk admitted now is not sent yet, so not in the campaign's counters.
        rest = max(0, int(counts) - granted)
        eta = self.plan.last_day_for(rest, now.date(), today.remaining)
        return (
            f"{warmup.NOTE_PREFIX}{today.sent:,} of {today.allowance:,} today; continues at "
            f"{today.resets_at:%Y-%m-%d %H:%M} UTC (ETA for the rest: {eta:%Y-%m-%d})"
        )


@dataclass
class DailyQuota:
    db: Database
    campaign_id: int
    # The statusReason the campaign shows for a limit (cleared once sending continues), or None.
    note: str | None = None
    limits: list[DailyLimit] = field(default_factory=list)

    @classmethod
    def for_campaign(cls, db: Database, campaign: Campaign, quota: int | None) -> DailyQuota:
        reason = campaign.status_reason or ""
        note = reason if reason.startswith(_NOTES) else None
        return cls(db, campaign.id, note, [WorkspaceQuota()] if quota is not None else [])

    def add(self, limit: DailyLimit) -> None:
        self.limits.append(limit)

    async def admit(self, wanted: int, now: datetime | None = None) -> Admitted:
        if not self.limits:
            return Admitted(wanted)
        now = now or utcnow()
        async with self.db.transaction() as session:
            lefts = [await limit.left(session, now) for limit in self.limits]
            granted = max(0, min([wanted, *(left for left in lefts if left is not None)]))
            if granted:
                for limit, left in zip(self.limits, lefts, strict=True):
                    if left is not None:
                        await limit.count(session, granted, now)
            if granted == wanted:
                if self.note is not None:
                    await lifecycle.note_while_running(session, self.campaign_id, None)
                    self.note = None
                return Admitted(granted)
            held = next(
                limit
                for limit, left in zip(self.limits, lefts, strict=True)
                if left is not None and left == granted
            )
            reason = await held.reason(session, now, self.campaign_id, granted)
            if reason != self.note:
                await lifecycle.note_while_running(session, self.campaign_id, reason)
                self.note = reason
        return Admitted(granted, wait=(warmup.next_midnight(now) - now).total_seconds())
