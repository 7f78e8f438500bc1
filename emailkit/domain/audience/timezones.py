"""A person's timezone: the subscriber attribute ``timezone`` (an IANA name such as ``Europe/Paris``) when it is
valid, else the default of the list they are reached through, else the instance's ``EMAILKIT_DEFAULT_TIMEZONE``.

Names are checked on every write that can store one (a subscriber's attributes through the API and the CSV
import, a list's ``defaultTimezone``), so a bad one is the caller's ``INVALID_TIMEZONE``. Stored data is still
never trusted at send time: a zone that no longer resolves (written before the check existed, or by hand, or
dropped from a newer tz database) falls back to the next rule, never to an exception.

A name is valid when the tz database of this machine lists it (``zoneinfo.available_timezones``), minus the
aliases of the machine's own setting that the database directory also holds (``localtime``, ``posixrules``):
no paths, no empty name, case as the database spells it.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import MailingList, Subscription, SubscriptionStatus
from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.domain.errors import ErrorCode, FieldError

# The subscriber attribute holding a person's zone.
ATTRIBUTE: Final = "timezone"
# Files of the tz directory that describe this machine's setting rather than a place.
_NOT_PLACES: Final = frozenset({"localtime", "posixrules"})
_MAX_LENGTH: Final = 64
# Subscriber ids per statement: well under every driver's parameter limit.
_IDS_PER_STATEMENT: Final = 500


@functools.cache
def _known() -> frozenset[str]:
    # Read once per process, on first use (the tz directory is walked: a few ms).
    return frozenset(zoneinfo.available_timezones() - _NOT_PLACES)


def is_valid(name: object) -> bool:
    """Whether `name` is an IANA zone name this machine knows (UTC always is)."""
    return isinstance(name, str) and (name == "UTC" or (0 < len(name) <= _MAX_LENGTH and name in _known()))


@functools.lru_cache(maxsize=1024)
def _load(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # A machine without any tz database still knows UTC.
        return UTC if name == "UTC" else None


def zone(name: object) -> tzinfo | None:
    """The zone named `name` (a ZoneInfo); None when it is not a valid name, or no longer loads."""
    return _load(name) if isinstance(name, str) and is_valid(name) else None


def error(field: str, name: object) -> FieldError:
    shown = repr(name) if isinstance(name, str) else "a non-text value"
    return FieldError(
        field,
        f"{shown[:80]} is not an IANA timezone name (such as Europe/Paris or America/New_York)",
        ErrorCode.INVALID_TIMEZONE,
    )


def attribute_errors(attributes: Mapping[str, Any], field: str = "attributes") -> list[FieldError]:
    """An invalid ``timezone`` attribute as the write's error; an absent or null one is fine."""
    name = attributes.get(ATTRIBUTE)
    if name is None or is_valid(name):
        return []
    return [error(f"{field}.{ATTRIBUTE}", name)]


def zone_for(attributes: Mapping[str, Any] | None, list_default: str | None, default: str) -> tzinfo:
    """A person's zone: their ``timezone`` attribute if valid, else `list_default` if valid, else `default`
    (the instance's, checked at start-up), else UTC. Never raises."""
    for name in ((attributes or {}).get(ATTRIBUTE), list_default, default):
        found = zone(name)
        if found is not None:
            return found
    return UTC


def instant_at(wall_clock: datetime, where: tzinfo) -> datetime:
    """When the clocks of `where` show `wall_clock` (naive, or its offset ignored), in UTC.

    A time that a DST change skips (02:30 on a spring-forward night) is read with the offset before the change,
    so it falls an hour later on the new clock; a time that happens twice is its first occurrence."""
    local = wall_clock.replace(tzinfo=where, fold=0)
    return local.astimezone(UTC)


class ZoneResolver:
    """Zones of many people at once, for a batch of recipients: the lists' defaults are read once."""

    def __init__(self, list_defaults: Mapping[int, str], default: str) -> None:
        # Only valid ones: a stored default that no longer resolves is as good as none.
        self._list_zones = {
            list_id: found for list_id, name in sorted(list_defaults.items()) if (found := zone(name))
        }
        self._default = zone_for(None, None, default)

    @property
    def default(self) -> tzinfo:
        return self._default

    def zone_of(self, attribute: object, list_ids: Iterable[int] = ()) -> tzinfo:
        """A person's zone from their ``timezone`` attribute's value and the lists they are reached through:
        the attribute, else the default of the first of those lists (by id) that has one, else the default."""
        own = zone(attribute)
        if own is not None:
            return own
        for list_id in sorted(list_ids):
            found = self._list_zones.get(list_id)
            if found is not None:
                return found
        return self._default

    def zones(self) -> list[tzinfo]:
        """Every zone this resolver falls back to (the lists' defaults and the default)."""
        return [*self._list_zones.values(), self._default]


async def list_defaults(session: AsyncSession, list_ids: Iterable[int] | None = None) -> dict[int, str]:
    """The lists' default timezones (of `list_ids`, or of every list in the workspace), where set."""
    stmt = select(MailingList.id, MailingList.default_timezone).where(
        MailingList.default_timezone.is_not(None)
    )
    if list_ids is not None:
        stmt = stmt.where(MailingList.id.in_(list(list_ids)))
    return {int(i): str(name) for i, name in (await session.execute(stmt)).all()}


async def resolver(session: AsyncSession, default: str) -> ZoneResolver:
    """A resolver over every list of the workspace in scope."""
    return ZoneResolver(await list_defaults(session), default)


async def attribute_values(session: AsyncSession, subscriber_ids: Iterable[int]) -> dict[int, str | None]:
    """Each subscriber's ``timezone`` attribute as stored (unchecked: see `ZoneResolver.zone_of`)."""
    ids = sorted(set(subscriber_ids))
    out: dict[int, str | None] = {}
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        stmt = select(SubscriberRow.id, SubscriberRow.attributes[ATTRIBUTE].as_string()).where(
            SubscriberRow.id.in_(ids[start : start + _IDS_PER_STATEMENT])
        )
        out.update((int(sid), name) for sid, name in (await session.execute(stmt)).all())
    return out


async def zones_of(session: AsyncSession, subscriber_ids: Iterable[int], default: str) -> dict[int, tzinfo]:
    """Each subscriber's zone: their attribute, else the default of the first list (by id) they are subscribed
    to (not unsubscribed) that has one, else `default`. Subscribers that do not exist are left out."""
    names = await attribute_values(session, subscriber_ids)
    if not names:
        return {}
    zones = await resolver(session, default)
    lists: dict[int, list[int]] = {}
    ids = sorted(names)
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        memberships = select(Subscription.subscriber_id, Subscription.list_id).where(
            Subscription.subscriber_id.in_(ids[start : start + _IDS_PER_STATEMENT]),
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        for sid, list_id in (await session.execute(memberships)).all():
            lists.setdefault(int(sid), []).append(int(list_id))
    return {sid: zones.zone_of(name, lists.get(sid, ())) for sid, name in names.items()}
