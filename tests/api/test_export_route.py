"""GET /export/subscribers.csv: authentication, selections, flattened attributes, inert cells, streaming."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import SubscriptionStatus
from emailkit.domain.audience import exports, subscribers
from emailkit.domain.audience.segments import store as segments
from emailkit.schema.relay import to_global_id
from tests.support.factories import insert_list, make_key

URL = "/export/subscribers.csv"


async def add(
    db: Database, email: str, name: str = "", attributes: dict[str, Any] | None = None, **kw: Any
) -> int:
    async with db.transaction() as s:
        return (await subscribers.create_subscriber(s, email, name=name, attributes=attributes, **kw)).id


async def get_csv(client: httpx.AsyncClient, key: str, **params: str) -> list[list[str]]:
    resp = await client.get(URL, params=params, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert resp.headers["content-disposition"] == 'attachment; filename="subscribers.csv"'
    return list(csv.reader(io.StringIO(resp.text, newline="")))


async def test_export_flattens_attributes_and_defuses_formulas(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    await add(
        db,
        "anna@example.com",
        "Anna",
        {
            "city": "Berlin",
            "address": {"zip": "10115", "geo": {"lat": 52.5}},
            "tags": ["a", "b"],
            "vip": True,
        },
    )
    await add(db, "-eve@example.com", '=HYPERLINK("http://evil")', {"city": "+49 30", "note": "@SUM(A1)"})
    await add(db, "plain@example.com", attributes={"email": "other@example.com", "n": -3})

    rows = await get_csv(client, admin_key)
    header, *body = rows
    assert header == [
        "email",
        "name",
        "status",
        "created_at",
        "address.geo.lat",
        "address.zip",
        "city",
        # An attribute named like a fixed column gets a prefix instead of clashing with it.
        "attributes.email",
        "n",
        "note",
        "tags",
        "vip",
    ]
    by_email = {r[0]: dict(zip(header, r, strict=True)) for r in body}
    anna = by_email["anna@example.com"]
    assert (anna["name"], anna["status"], anna["address.geo.lat"], anna["address.zip"]) == (
        "Anna",
        "ENABLED",
        "52.5",
        "10115",
    )
    assert (anna["tags"], anna["vip"], anna["note"]) == ('["a", "b"]', "true", "")
    assert anna["created_at"].startswith("20") and anna["created_at"].endswith("+00:00")
    # Cells a spreadsheet would evaluate are prefixed with a quote, values kept otherwise.
    eve = by_email["'-eve@example.com"]
    assert (eve["name"], eve["city"], eve["note"]) == ('\'=HYPERLINK("http://evil")', "'+49 30", "'@SUM(A1)")
    plain = by_email["plain@example.com"]
    assert (plain["attributes.email"], plain["n"]) == ("other@example.com", "'-3")
    assert [r[0] for r in body] == ["anna@example.com", "'-eve@example.com", "plain@example.com"]


async def test_export_of_a_list_and_of_a_segment(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    news = await insert_list(db, "News")
    await add(db, "a@example.com", attributes={"city": "Berlin"}, list_ids=[news])
    await add(db, "b@example.com", attributes={"city": "Paris", "vip": True}, list_ids=[news])
    await add(
        db,
        "c@example.com",
        attributes={"city": "Berlin"},
        list_ids=[news],
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )
    await add(db, "d@example.com", attributes={"city": "Berlin", "zip": 1})
    async with db.transaction() as s:
        berlin = await segments.create_segment(
            s,
            segments.SegmentInput(
                name="Berlin", filter={"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}
            ),
        )
    list_id = to_global_id("MailingList", news)
    segment_id = to_global_id("Segment", berlin.id)

    on_list = await get_csv(client, admin_key, listId=list_id)
    # The attribute columns are those of the selection only.
    assert on_list[0][4:] == ["city", "vip"]
    assert [r[0] for r in on_list[1:]] == ["a@example.com", "b@example.com", "c@example.com"]
    confirmed = await get_csv(client, admin_key, listId=list_id, subscriptionStatus="CONFIRMED")
    assert [r[0] for r in confirmed[1:]] == ["a@example.com", "b@example.com"]

    in_segment = await get_csv(client, admin_key, segmentId=segment_id)
    assert in_segment[0][4:] == ["city", "zip"]
    assert [r[0] for r in in_segment[1:]] == ["a@example.com", "c@example.com", "d@example.com"]
    both = await get_csv(client, admin_key, segmentId=segment_id, listId=list_id)
    assert [r[0] for r in both[1:]] == ["a@example.com", "c@example.com"]


async def test_export_streams_page_by_page(
    client: httpx.AsyncClient, db: Database, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PAGE_SIZE", 3)
    for i in range(10):
        await add(db, f"u{i}@example.com", attributes={"i": i} if i % 4 else {"late": {"key": i}})
    chunks: list[str] = []
    async with client.stream("GET", URL, headers={"Authorization": f"Bearer {admin_key}"}) as resp:
        assert resp.status_code == 200
        async for text in resp.aiter_text():
            chunks.append(text)
    rows = list(csv.reader(io.StringIO("".join(chunks), newline="")))
    assert rows[0][4:] == ["i", "late.key"]
    assert [r[0] for r in rows[1:]] == [f"u{i}@example.com" for i in range(10)]
    assert rows[1][4:] == ["", "0"] and rows[2][4:] == ["1", ""]


async def test_export_needs_an_api_key_of_any_role(client: httpx.AsyncClient, db: Database) -> None:
    missing = await client.get(URL)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="emailkit"'
    unknown = await client.get(
        URL, headers={"Authorization": "Bearer ek_unknownunknownunknownunknownunknown0"}
    )
    assert unknown.status_code == 401
    viewer = await make_key(db, Role.VIEWER, "viewer")
    assert (await get_csv(client, viewer)) == [["email", "name", "status", "created_at"]]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"listId": "nope"}, 400, "INVALID_ID"),
        ({"listId": to_global_id("Segment", 1)}, 400, "INVALID_ID"),
        ({"segmentId": "%%%"}, 400, "INVALID_ID"),
        ({"subscriptionStatus": "CONFIRMED"}, 400, "INVALID_ARGUMENT"),
        ({"listId": to_global_id("MailingList", 1), "subscriptionStatus": "maybe"}, 400, "INVALID_ARGUMENT"),
        ({"listId": to_global_id("MailingList", 999)}, 404, "LIST_NOT_FOUND"),
        ({"segmentId": to_global_id("Segment", 999)}, 404, "SEGMENT_NOT_FOUND"),
    ],
)
async def test_bad_selections_are_refused(
    client: httpx.AsyncClient, admin_key: str, params: dict[str, str], status: int, code: str
) -> None:
    resp = await client.get(URL, params=params, headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
