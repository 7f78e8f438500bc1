"""The marketing frequency cap: at most `limit` marketing messages per person within a rolling `window`, across
every campaign and every flow. ``EMAILKIT_MARKETING_CAP`` (``3/day``, ``10/week``,
``1/hour``) sets it; unset, it is off and nothing here runs.

What counts is one definition, :func:`went_out_since`: ledger rows of marketing mail (:data:`MARKETING`) that
went out, or may have (SENT, SENDING, IN_DOUBT), within the window. Transactional and double opt-in mail are
ledger rows without a campaign and never count, nor are they ever held back.

A campaign materialises a capped person as SKIPPED with reason ``frequency_cap`` (:func:`capped`); a flow asks
when a person may be mailed again (:func:`next_allowed`) and waits until then.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import Delivery, DeliveryStatus

SKIP_FREQUENCY_CAP: Final = "frequency_cap"

_WINDOWS: Final = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
_SPEC = re.compile(r"\s*(\d{1,6})\s*/\s*(hour|day|week)s?\s*", re.IGNORECASE)
# Subscriber ids per statement: well under every driver's parameter limit.
_IDS_PER_STATEMENT = 500

# The one definition of a marketing message: a campaign's delivery, or a flow SEND's (which carries its run).
MARKETING: ColumnElement[bool] = or_(Delivery.campaign_id.is_not(None), Delivery.flow_run_id.is_not(None))


@dataclass(frozen=True)
class FrequencyCap:
    """At most `limit` marketing messages per person within any `window`."""

    limit: int
    window: timedelta

    @classmethod
    def parse(cls, text: str) -> FrequencyCap:
        """``N/hour``, ``N/day`` or ``N/week`` with N ≥ 1; ValueError otherwise."""
        found = _SPEC.fullmatch(text)
        if found is None or int(found.group(1)) < 1:
            raise ValueError("must be N/hour, N/day or N/week with N at least 1 (e.g. 3/day)")
        return cls(int(found.group(1)), _WINDOWS[found.group(2).lower()])

    def __str__(self) -> str:
        unit = next(name for name, size in _WINDOWS.items() if size == self.window)
        return f"{self.limit}/{unit}"


def went_out_since(since: datetime) -> ColumnElement[bool]:
    """Marketing ledger rows that went out (or may have) after `since`: SENT ones by when they were sent,
    SENDING and IN_DOUBT ones (handed over, outcome unknown) by their last change."""
    return and_(
        MARKETING,
        or_(
            and_(Delivery.status == DeliveryStatus.SENT, Delivery.sent_at > since),
            and_(
                Delivery.status.in_((DeliveryStatus.SENDING, DeliveryStatus.IN_DOUBT)),
                Delivery.updated_at > since,
            ),
        ),
    )


async def recent_sends(
    session: AsyncSession, subscriber_ids: Iterable[int], since: datetime
) -> dict[int, list[datetime]]:
    """When each of these people was sent marketing mail after `since`, oldest first (absent: never)."""
    ids = sorted(set(subscriber_ids))
    when = func.coalesce(Delivery.sent_at, Delivery.updated_at)
    out: dict[int, list[datetime]] = defaultdict(list)
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        stmt = (
            select(Delivery.subscriber_id, when)
            .where(Delivery.subscriber_id.in_(ids[start : start + _IDS_PER_STATEMENT]), went_out_since(since))
            .order_by(Delivery.subscriber_id, when)
        )
        for sid, at in (await session.execute(stmt)).all():
            if sid is not None:
                out[sid].append(_utc(at))
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def capped(
    session: AsyncSession, cap: FrequencyCap, subscriber_ids: Sequence[int], now: datetime
) -> set[int]:
    """The people who have had `cap.limit` marketing messages within the window ending `now`."""
    sends = await recent_sends(session, subscriber_ids, now - cap.window)
    return {sid for sid, times in sends.items() if len(times) >= cap.limit}


async def next_allowed(
    session: AsyncSession, cap: FrequencyCap, subscriber_ids: Iterable[int], now: datetime
) -> dict[int, datetime]:
    """For each capped person among `subscriber_ids`, the instant they may be sent marketing mail again: when
    enough of their sends in the window have aged out of it. People under the cap are absent."""
    sends = await recent_sends(session, subscriber_ids, now - cap.window)
    allowed = {}
    for sid, times in sends.items():
        if len(times) >= cap.limit:
            # With n sends in the window, one more is allowed once n - limit + 1 of them have left it.
            allowed[sid] = times[len(times) - cap.limit] + cap.window
    return allowed


def cap_check(
    cap: FrequencyCap,
) -> Callable[[AsyncSession, Sequence[int], datetime], Awaitable[dict[int, datetime]]]:
    """`next_allowed` under `cap`, as a flow's SEND step asks it."""

    async def check(
        session: AsyncSession, subscriber_ids: Sequence[int], now: datetime
    ) -> dict[int, datetime]:
        return await next_allowed(session, cap, subscriber_ids, now)

    return check
