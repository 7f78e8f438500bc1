"""When a WAIT ends: after a duration, or at the next moment the person's own clock is inside a window."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from emailkit.domain.automation.definition import Step, Window


def wake_time(step: Step, zone: tzinfo, now: datetime) -> datetime:
    """When a WAIT step that starts `now` ends for a person in `zone`."""
    at = now + timedelta(seconds=step.wait_seconds or 0)
    if step.window is None:
        return at
    return next_in_window(step.window, zone, at)


def next_in_window(window: Window, zone: tzinfo, at: datetime) -> datetime:
    """`at` itself when the local clock is inside the window then, else the window's next start (UTC)."""
    local = at.astimezone(zone)
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        if day.isoweekday() not in window.weekdays:
            continue
        start = datetime.combine(day, window.start, zone)
        end = datetime.combine(day, window.end, zone)
        if days == 0 and start <= local < end:
            return at
        if local < start:
            # A start that falls in a DST gap is read as the moment after it (zoneinfo's fold=0 mapping).
            return start.astimezone(at.tzinfo)
    raise AssertionError("a window has at least one weekday, so a start comes within a week")
