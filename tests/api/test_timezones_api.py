"""Timezones through the API: a subscriber's timezone attribute and a list's defaultTimezone are checked on
write (INVALID_TIMEZONE), an import row with a bad one is that row's error, and scheduleCampaign with
localTime reports when it starts and the wall-clock time it keeps."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from emailkit.db.engine import Database
from tests.support.factories import insert_list
from tests.support.graphql import GQL, data, make_list
from tests.support.import_job import people, report, run, start

CREATE_SUBSCRIBER = """
mutation($i: CreateSubscriberInput!) {
  createSubscriber(input: $i) { subscriber { id attributes } userErrors { field code message } }
}
"""
UPDATE_SUBSCRIBER = """
mutation($i: UpdateSubscriberInput!) {
  updateSubscriber(input: $i) { subscriber { attributes } userErrors { field code } }
}
"""
CREATE_LIST = """
mutation($i: CreateListInput!) {
  createList(input: $i) { list { id defaultTimezone } userErrors { field code } }
}
"""
UPDATE_LIST = """
mutation($i: UpdateListInput!) {
  updateList(input: $i) { list { defaultTimezone } userErrors { field code } }
}
"""
CREATE_CAMPAIGN = """
mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } userErrors { code } } }
"""
SCHEDULE = """
mutation($i: ScheduleCampaignInput!) {
  scheduleCampaign(input: $i) {
    campaign { status sendAt localTime localSendAt }
    userErrors { field code message }
  }
}
"""


async def test_a_subscriber_s_timezone_attribute_must_be_an_iana_name(gql: GQL) -> None:
    bad = data(
        await gql(CREATE_SUBSCRIBER, {"i": {"email": "a@example.com", "attributes": {"timezone": "CEST"}}})
    )["createSubscriber"]
    assert bad["subscriber"] is None
    [error] = bad["userErrors"]
    assert (error["field"], error["code"]) == ("attributes.timezone", "INVALID_TIMEZONE")

    good = data(
        await gql(
            CREATE_SUBSCRIBER, {"i": {"email": "a@example.com", "attributes": {"timezone": "Europe/Berlin"}}}
        )
    )["createSubscriber"]
    assert good["userErrors"] == []
    subscriber_id = good["subscriber"]["id"]

    for zone in ("localtime", "", "../UTC"):
        out = data(
            await gql(UPDATE_SUBSCRIBER, {"i": {"id": subscriber_id, "attributes": {"timezone": zone}}})
        )["updateSubscriber"]
        assert out["userErrors"] == [{"field": "attributes.timezone", "code": "INVALID_TIMEZONE"}]
    out = data(
        await gql(UPDATE_SUBSCRIBER, {"i": {"id": subscriber_id, "attributes": {"timezone": "Asia/Tokyo"}}})
    )["updateSubscriber"]
    assert out == {"subscriber": {"attributes": {"timezone": "Asia/Tokyo"}}, "userErrors": []}


async def test_a_list_s_default_timezone_is_checked_kept_and_removed(gql: GQL) -> None:
    bad = data(await gql(CREATE_LIST, {"i": {"name": "L", "defaultTimezone": "Paris"}}))["createList"]
    assert bad == {"list": None, "userErrors": [{"field": "defaultTimezone", "code": "INVALID_TIMEZONE"}]}

    created = data(await gql(CREATE_LIST, {"i": {"name": "L", "defaultTimezone": "Europe/Paris"}}))[
        "createList"
    ]
    assert created["list"]["defaultTimezone"] == "Europe/Paris"
    list_id = created["list"]["id"]

    async def update(**fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = data(await gql(UPDATE_LIST, {"i": {"id": list_id, **fields}}))["updateList"]
        return out

    assert await update(defaultTimezone="Nowhere/Town") == {
        "list": None,
        "userErrors": [{"field": "defaultTimezone", "code": "INVALID_TIMEZONE"}],
    }
    assert await update(name="Renamed") == {"list": {"defaultTimezone": "Europe/Paris"}, "userErrors": []}
    assert await update(defaultTimezone="America/Chicago") == {
        "list": {"defaultTimezone": "America/Chicago"},
        "userErrors": [],
    }
    assert await update(defaultTimezone="") == {"list": {"defaultTimezone": None}, "userErrors": []}


async def test_an_import_row_with_an_unknown_timezone_is_that_row_s_error(db: Database) -> None:
    csv = (
        b"email,timezone,city\n"
        b"ann@example.com,Europe/Rome,Rome\n"
        b"bob@example.com,Moon/Tranquility,Nowhere\n"
        b"cid@example.com,,Oslo\n"
    )
    import_id = await start(db, csv, list_ids=[await insert_list(db)])
    row = await run(db, import_id)
    assert (row.inserted, row.failed) == (2, 1)
    assert await report(db, import_id) == [
        (3, "timezone: 'Moon/Tranquility' is not an IANA timezone name (such as Europe/Paris)")
    ]
    imported = await people(db)
    assert imported["ann@example.com"].attributes == {"timezone": "Europe/Rome", "city": "Rome"}
    assert imported["cid@example.com"].attributes == {"city": "Oslo"}


def readme_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Local time and the frequency cap") :]
    [example] = re.findall(r"```graphql\n(.*?)```", section[: section.index("\n## ", 1)], re.S)
    return example


async def test_schedule_in_local_time_starts_with_the_first_timezone_of_the_audience(gql: GQL) -> None:
    list_id = await make_list(gql, "World")
    for email, zone in (("east@example.com", "Asia/Tokyo"), ("west@example.com", "America/New_York")):
        out = data(
            await gql(
                CREATE_SUBSCRIBER,
                {"i": {"email": email, "attributes": {"timezone": zone}, "listIds": [list_id]}},
            )
        )["createSubscriber"]
        assert out["userErrors"] == []
    campaign_id = data(
        await gql(
            CREATE_CAMPAIGN,
            {
                "i": {
                    "name": "Morning",
                    "subject": "Good morning",
                    "fromEmail": "news@example.com",
                    "listIds": [list_id],
                    "body": "<p>Hi</p>",
                    "format": "HTML",
                }
            },
        )
    )["createCampaign"]["campaign"]["id"]

    out = data(
        await gql(
            SCHEDULE, {"i": {"id": campaign_id, "sendAt": "2031-06-02T09:00:00+02:00", "localTime": True}}
        )
    )["scheduleCampaign"]
    assert out["userErrors"] == []
    assert out["campaign"] == {
        "status": "SCHEDULED",
        # 09:00 in Tokyo, whatever the offset said.
        "sendAt": "2031-06-02T00:00:00+00:00",
        "localTime": True,
        "localSendAt": "2031-06-02T09:00:00",
    }
    # A wall-clock time may leave its offset out, in local time only.
    out = data(
        await gql(SCHEDULE, {"i": {"id": campaign_id, "sendAt": "2031-06-02T18:30:00", "localTime": True}})
    )["scheduleCampaign"]
    assert out["campaign"]["localSendAt"] == "2031-06-02T18:30:00"
    out = data(await gql(SCHEDULE, {"i": {"id": campaign_id, "sendAt": "2031-06-02T18:30:00"}}))[
        "scheduleCampaign"
    ]
    assert out["userErrors"][0]["code"] == "INVALID_INPUT"
    # Scheduled again at one instant: no longer local.
    out = data(await gql(SCHEDULE, {"i": {"id": campaign_id, "sendAt": "2031-06-02T18:30:00Z"}}))[
        "scheduleCampaign"
    ]
    assert out["campaign"] == {
        "status": "SCHEDULED",
        "sendAt": "2031-06-02T18:30:00+00:00",
        "localTime": False,
        "localSendAt": None,
    }
    out = data(
        await gql(SCHEDULE, {"i": {"id": campaign_id, "sendAt": "2001-01-01T09:00:00", "localTime": True}})
    )["scheduleCampaign"]
    assert out["userErrors"] == [
        {"field": "sendAt", "code": "INVALID_INPUT", "message": "sendAt has passed in every timezone"}
    ]
    # The README's example, as written.
    out = data(await gql(readme_example(), {"id": campaign_id}))["scheduleCampaign"]
    assert out["userErrors"] == []
    assert out["campaign"] == {
        "status": "SCHEDULED",
        "sendAt": "2031-06-02T00:00:00+00:00",
        "localTime": True,
        "localSendAt": "2031-06-02T09:00:00",
    }
