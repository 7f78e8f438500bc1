"""A sender's warm-up: how many messages it may hand over on a UTC day, and today's count of them.

A new sending IP or domain earns its reputation by growing its volume day by day: the plan says where it
starts, how fast it grows and where it stops, ``min(ceiling, start * (1 + growth%)^days)`` with days counted
from ``starts_on``. Campaigns and flows' SEND steps count against it (transactional mail does not: a password
reset must not wait for tomorrow). The count lives on the sender's row and is taken under that row's lock in
the transaction that admits a chunk, so every worker shares it and none can go over; a sender without a plan
is never read or locked for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import case, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.senders import Sender
from emailkit.domain.errors import ErrorCode, FieldError

MAX_PER_DAY = 100_000_000
MAX_GROWTH_PERCENT = 1000.0
# What a campaign's statusReason starts with while the warm-up holds it.
NOTE_PREFIX = "Sender warm-up: "


@dataclass(frozen=True)
class WarmupPlan:
    start_per_day: int
    growth_percent: float
    ceiling_per_day: int
    starts_on: date

    def allowance(self, day: date) -> int:
        """Messages the sender may hand over on `day` (the first day's before the plan starts)."""
        days = max(0, (day - self.starts_on).days)
        if self.growth_percent <= 0 or days == 0:
            return min(self.start_per_day, self.ceiling_per_day)
        # In logarithms: (1 + g)^days overflows a float long before a plan's day count gets unusual.
        grown = math.log(self.start_per_day) + days * math.log1p(self.growth_percent / 100)
        if grown >= math.log(self.ceiling_per_day):
            return self.ceiling_per_day
        return min(self.ceiling_per_day, int(math.exp(grown) + 1e-9))

    def last_day_for(self, remaining: int, day: date, left_today: int) -> date:
        """The day on which `remaining` more messages will all have gone, `left_today` of them going today
        and the allowance of each following day after that (if nothing else shares the sender)."""
        remaining -= left_today
        while remaining > 0:
            day += timedelta(days=1)
            allowance = self.allowance(day)
            if allowance >= self.ceiling_per_day:
                return day + timedelta(days=math.ceil(remaining / allowance) - 1)
            remaining -= allowance
        return day


def plan_of(row: Sender) -> WarmupPlan | None:
    if (
        row.warmup_start_per_day is None
        or row.warmup_growth_percent is None
        or row.warmup_ceiling_per_day is None
        or row.warmup_starts_on is None
    ):
        return None
    return WarmupPlan(
        row.warmup_start_per_day, row.warmup_growth_percent, row.warmup_ceiling_per_day, row.warmup_starts_on
    )


def check_plan(
    errors: list[FieldError],
    start_per_day: int,
    growth_percent: float,
    ceiling_per_day: int,
    field: str = "warmup",
) -> None:
    if not 1 <= start_per_day <= MAX_PER_DAY:
        errors.append(
            FieldError(f"{field}.startPerDay", f"Between 1 and {MAX_PER_DAY:,}", ErrorCode.OUT_OF_RANGE)
        )
    if not math.isfinite(growth_percent) or not 0 <= growth_percent <= MAX_GROWTH_PERCENT:
        errors.append(
            FieldError(
                f"{field}.growthPercent", f"Between 0 and {MAX_GROWTH_PERCENT:g}", ErrorCode.OUT_OF_RANGE
            )
        )
    if not start_per_day <= ceiling_per_day <= MAX_PER_DAY:
        errors.append(
            FieldError(
                f"{field}.ceilingPerDay",
                f"At least startPerDay ({start_per_day:,}) and at most {MAX_PER_DAY:,}",
                ErrorCode.OUT_OF_RANGE,
            )
        )


def set_plan(row: Sender, plan: WarmupPlan | None) -> None:
    row.warmup_start_per_day = plan.start_per_day if plan else None
    row.warmup_growth_percent = plan.growth_percent if plan else None
    row.warmup_ceiling_per_day = plan.ceiling_per_day if plan else None
    row.warmup_starts_on = plan.starts_on if plan else None


def next_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=now.tzinfo)


@dataclass(frozen=True)
class Today:
    """A sender's day under its plan: what it may hand over, what it has, and when the day ends."""

    allowance: int
    sent: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.allowance - self.sent)


def today_of(row: Sender, plan: WarmupPlan, now: datetime) -> Today:
    sent = row.warmup_sent if row.warmup_day == now.date() else 0
    return Today(plan.allowance(now.date()), sent, next_midnight(now))


async def locked_today(session: AsyncSession, sender_id: int, plan: WarmupPlan, now: datetime) -> Today:
    """Today's count of the sender, its row locked until the caller's transaction ends.

    Read by a write (the day rolled over, RETURNING the count) rather than SELECT ... FOR UPDATE: on SQLite a
    transaction takes the database's write lock only with its first write, so a read first would let two
    workers both see the same count."""
    today = now.date()
    sent = (
        await session.execute(
            update(Sender)
            .where(Sender.id == sender_id)
            .values(
                warmup_day=today,
                warmup_sent=case((Sender.warmup_day == today, Sender.warmup_sent), else_=0),
                updated_at=Sender.updated_at,
            )
            .returning(Sender.warmup_sent)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    return Today(plan.allowance(today), sent or 0, next_midnight(now))


async def count(session: AsyncSession, sender_id: int, n: int, now: datetime) -> None:
    """Add `n` to today's count (after :func:`locked_today`, in the same transaction)."""
    await session.execute(
        update(Sender)
        .where(Sender.id == sender_id)
        .values(
            warmup_sent=Sender.warmup_sent + n,
            # Kept as it is: a new updated_at would make every worker rebuild the sender's provider.
            updated_at=Sender.updated_at,
        )
        .execution_options(synchronize_session=False)
    )
