"""Timezone names and a person's zone: what is valid, which rule wins, and how a wall-clock time becomes an
instant across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from emailkit.domain.audience import timezones
from emailkit.domain.audience.subscriber_fields import attribute_errors
from emailkit.domain.audience.timezones import ZoneResolver, instant_at, zone_for
from emailkit.domain.errors import ErrorCode


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+12"])
def test_iana_names_are_valid(name: str) -> None:
    assert timezones.is_valid(name)
    assert timezones.zone(name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "localtime",
        "posixrules",
        "/usr/share/zoneinfo/Europe/Paris",
        "../../etc/passwd",
        "Europe/../Europe/Paris",
        "europe/paris",
        "Mars/Olympus_Mons",
        "Europe/Paris ",
        "x" * 200,
        5,
        None,
        ["Europe/Paris"],
    ],
)
def test_other_names_are_not(name: object) -> None:
    assert not timezones.is_valid(name)
    assert timezones.zone(name) is None


def test_a_person_s_zone_is_their_own_else_their_list_s_else_the_default() -> None:
    assert zone_for({"timezone": "Asia/Tokyo"}, "Europe/Paris", "UTC") == ZoneInfo("Asia/Tokyo")
    assert zone_for({"timezone": "Mars/Base"}, "Europe/Paris", "UTC") == ZoneInfo("Europe/Paris")
    assert zone_for({}, None, "America/New_York") == ZoneInfo("America/New_York")
    assert zone_for(None, "nowhere", "America/New_York") == ZoneInfo("America/New_York")
    # Nothing valid at all (a default that is never refused at start-up): UTC, never an exception.
    assert zone_for({"timezone": 7}, "", "nowhere").utcoffset(datetime(2031, 1, 1)) == UTC.utcoffset(None)


def test_a_batch_resolver_takes_the_first_list_by_id_that_has_a_default() -> None:
    zones = ZoneResolver({8: "Asia/Tokyo", 3: "Europe/Paris", 5: "Not/AZone"}, "UTC")
    assert zones.zone_of(None, [8, 3]) == ZoneInfo("Europe/Paris")
    assert zones.zone_of(None, [8, 5]) == ZoneInfo("Asia/Tokyo")
    assert zones.zone_of(None, [5]) == ZoneInfo("UTC")
    assert zones.zone_of("America/Denver", [3]) == ZoneInfo("America/Denver")
    assert zones.zone_of("", []) == zones.default == ZoneInfo("UTC")


def test_a_wall_clock_time_becomes_an_instant_in_each_zone() -> None:
    nine = datetime(2031, 6, 2, 9, 0)
    assert instant_at(nine, ZoneInfo("Asia/Tokyo")) == datetime(2031, 6, 2, 0, 0, tzinfo=UTC)
    assert instant_at(nine, ZoneInfo("America/New_York")) == datetime(2031, 6, 2, 13, 0, tzinfo=UTC)
    # An offset on the wall-clock time is ignored: it is read on the zone's own clock.
    assert instant_at(nine.replace(tzinfo=UTC), ZoneInfo("Europe/Paris")) == datetime(
        2031, 6, 2, 7, tzinfo=UTC
    )


def test_daylight_saving_changes() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 02:30 on 30 March 2031 does not exist in Paris (02:00 -> 03:00): read with the offset before the change,
    # it is 01:30 UTC, which the new clock shows as 03:30.
    assert instant_at(datetime(2031, 3, 30, 2, 30), paris) == datetime(2031, 3, 30, 1, 30, tzinfo=UTC)
    # 02:30 on 26 October 2031 happens twice (03:00 -> 02:00): the first time, still on summer time.
    assert instant_at(datetime(2031, 10, 26, 2, 30), paris) == datetime(2031, 10, 26, 0, 30, tzinfo=UTC)


def test_an_invalid_timezone_attribute_is_a_write_error_on_its_own_field() -> None:
    [error] = attribute_errors({"city": "Lyon", "timezone": "Europe/Lyon"})
    assert (error.field, error.code) == ("attributes.timezone", ErrorCode.INVALID_TIMEZONE)
    assert "Europe/Lyon" in error.message
    [error] = attribute_errors({"timezone": 3})
    assert error.code is ErrorCode.INVALID_TIMEZONE
    assert attribute_errors({"timezone": "Europe/Paris"}) == []
    assert attribute_errors({"timezone": None}) == []
    assert attribute_errors({}) == []
