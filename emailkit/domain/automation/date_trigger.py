"""DATE_ATTRIBUTE flows: people enter on the yearly anniversary of a date attribute (a birthday, the day they
signed up), at a time of day on their own clock.

Once an hour per flow, the ticker reads the people whose date falls within the next two days (by month and
day, so time zones from -12 to +14 hours are all covered) and enters each of them with a run due at the
anniversary's local time; until then the run waits in the index of due runs, like any wait. An anniversary
is one occurrence per year (``date:<year>``), so reading the same people again enters nobody twice; a flow
published today skips the anniversaries whose local time has already passed.

Dates are ISO strings (``1990-05-17``, or a date-time whose first ten characters are one); 29 February falls
on 28 February in other years. The read scans the workspace's people once an hour per flow, not every tick.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of
from emailkit.db.tables.audience import Subscriber, SubscriberStatus
from emailkit.db.tables.automation import Flow
from emailkit.domain.audience.timezones import zones_of
from emailkit.domain.automation import entry
from emailkit.domain.automation.definition import DEFAULT_TIME_OF_DAY

log = logging.getLogger(__name__)

SCAN_EVERY = timedelta(hours=1)
HORIZON = timedelta(days=2)


def _attribute_text(session: AsyncSession, name: str) -> Any:
    if dialect_of(session) == "postgresql":
        return type_coerce(Subscriber.attributes, JSONB())[name].astext
    return func.json_extract(Subscriber.attributes, f'$."{json.dumps(name)[1:-1]}"')


def _month_days(now: datetime) -> list[str]:
    days = [(now + timedelta(days=d)).date() for d in range(-1, 3)]
    out = {f"{d.month:02d}-{d.day:02d}" for d in days}
    if "02-28" in out:
        out.add("02-29")  # a leap-day date is celebrated on the 28th in other years
    return sorted(out)


def anniversary(value: str, year: int) -> date | None:
    """This year's anniversary of an ISO date string, or None when it is not one."""
    try:
        born = date.fromisoformat(value[:10])
    except (TypeError, ValueError):
        return None
    try:
        return born.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


async def scan(
    session: AsyncSession, target: entry.Target, flow: Flow, now: datetime, default_zone: str
) -> tuple[int, dict[str, Any]]:
    """Enter the people whose anniversary falls between the last scan and the horizon; returns how many, and
    the flow's trigger state to keep."""
    trig = target.definition.trigger
    name = trig.attribute or ""
    at = trig.time_of_day or time.fromisoformat(DEFAULT_TIME_OF_DAY)
    state = flow.trigger_state or {}
    since = datetime.fromisoformat(state["scanned_to"]) if "scanned_to" in state else now
    until = now + HORIZON
    text_value = _attribute_text(session, name)
    stmt = select(Subscriber.id, type_coerce(text_value, String()), Subscriber.attributes).where(
        Subscriber.status == SubscriberStatus.ENABLED,
        func.substr(text_value, 6, 5).in_(_month_days(now)),
    )
    due: dict[int, datetime] = {}
    rows = (await session.execute(stmt)).all()
    zones = await zones_of(session, [int(r[0]) for r in rows], default_zone)
    for sid, value, _ in rows:
        for year in (now.year - 1, now.year, now.year + 1):
            day = anniversary(value or "", year)
            if day is None:
                break
            instant = datetime.combine(day, at, zones.get(int(sid), UTC))
            if since <= instant < until:
                due[int(sid)] = instant
    entered = 0
    by_year: dict[int, list[int]] = {}
    for sid, instant in due.items():
        by_year.setdefault(instant.year, []).append(sid)
    for year, ids in sorted(by_year.items()):
        entered += await entry.enter_people(
            session, target, ids, occurrence=f"date:{year}", due={s: due[s] for s in ids}
        )
    return entered, {**state, "scanned_to": until.isoformat(), "scanned_at": now.isoformat()}


def due_for_scan(flow: Flow, now: datetime) -> bool:
    scanned = (flow.trigger_state or {}).get("scanned_at")
    return scanned is None or now - datetime.fromisoformat(scanned) >= SCAN_EVERY
