"""Campaigns in local time: each recipient gets the campaign when the clock of their own timezone shows the
campaign's wall-clock time (``scheduleCampaign(input: {id, sendAt, localTime: true})``).

``sendAt``'s date and time of day are that wall-clock time, read as written: its offset is ignored (and may be
left out), so ``2031-06-02T09:00:00+02:00`` and ``2031-06-02T09:00:00Z`` both mean 09:00 on 2 June wherever each
person is. Who is where is :mod:`~emailkit.domain.audience.timezones`' rule: the person's ``timezone``
attribute, else the default of the first list (by id) through which the campaign reaches them, else
``EMAILKIT_DEFAULT_TIMEZONE``.

Nothing waits in memory. Scheduling works out when the first timezone of the audience is due, and the ticker
starts the campaign then. Each batch materialises its recipients with ``deliveries.not_before`` (their own
instant), sends those that are due, and gives the batch back to run again when its next one is; the campaign
stays RUNNING, saying until when it waits for later timezones, and FINISHES once its last batch is done. A
person whose time had already passed when the campaign started gets it at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign
from emailkit.domain.audience import targeting, timezones
from emailkit.domain.audience.targeting import Target
from emailkit.domain.audience.timezones import ZoneResolver, instant_at

# What the statusReason of a campaign waiting for later timezones starts with.
NOTE_PREFIX: Final = "Local time: "
# The zone furthest behind UTC (Etc/GMT+12): a wall-clock time has passed everywhere once it passed there.
_LATEST_ZONE: Final = timezone(timedelta(hours=-12))


def wall_clock(send_at: datetime) -> datetime:
    """sendAt's date and time of day as written, without its offset."""
    return send_at.replace(tzinfo=None)


def has_passed_everywhere(wall: datetime, now: datetime) -> bool:
    """Whether `wall` has passed even in the timezone furthest behind UTC."""
    return instant_at(wall, _LATEST_ZONE) < now


@dataclass(frozen=True)
class LocalSchedule:
    """When the recipients of a local-time campaign are due: `wall` on their own clocks."""

    wall: datetime
    zones: ZoneResolver

    def due_at(self, attribute: object, list_ids: Iterable[int]) -> datetime:
        """The instant a recipient with this ``timezone`` attribute, reached through these lists, is due."""
        return instant_at(self.wall, self.zones.zone_of(attribute, list_ids))


async def schedule_of(
    session: AsyncSession, campaign: Campaign, default_timezone: str
) -> LocalSchedule | None:
    """The campaign's local schedule; None for a campaign sent at one instant."""
    if campaign.local_send_at is None:
        return None
    return LocalSchedule(campaign.local_send_at, await timezones.resolver(session, default_timezone))


async def due_range(
    session: AsyncSession, target: Target, wall: datetime, default_timezone: str
) -> tuple[datetime, datetime]:
    """When the first and the last timezone of the audience are due.

    Worked out from the distinct ``timezone`` attributes of the audience and, when someone has no valid one,
    the defaults of the lists that can reach them and the instance's: a person's own list is not looked up, so
    this can start a little before the first person is due, or say a little later than the last one is. A
    scan of the audience; run when scheduling and when starting, never per batch."""
    max_id = (await session.execute(select(func.max(Subscriber.id)))).scalar_one_or_none() or 0
    members = targeting.members_stmt(target, max_id).subquery()
    names = (
        await session.execute(
            select(Subscriber.attributes[timezones.ATTRIBUTE].as_string())
            .where(Subscriber.id.in_(select(members.c.subscriber_id)))
            .distinct()
        )
    ).scalars()
    zones = []
    falls_back = False
    for name in names:
        found = timezones.zone(name)
        if found is None:
            falls_back = True
        else:
            zones.append(found)
    if falls_back or not zones:
        # A segment match may be reached through any list.
        lists = None if target.segment_match is not None else target.list_ids
        defaults = await timezones.list_defaults(session, lists)
        zones.extend(ZoneResolver(defaults, default_timezone).zones())
    instants = sorted(instant_at(wall, z) for z in zones)
    return instants[0], instants[-1]


def waiting_note(wall: datetime, until: datetime) -> str:
    return (
        f"{NOTE_PREFIX}sending at {wall:%Y-%m-%d %H:%M} in each recipient's timezone; waiting for later "
        f"timezones until {until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    )


def running_note(campaign: Campaign, now: datetime) -> str | None:
    """What a RUNNING local-time campaign's statusReason says while later timezones are still due."""
    wall, until = campaign.local_send_at, campaign.local_send_until
    if wall is None or until is None or until <= now:
        return None
    return waiting_note(wall, until)
