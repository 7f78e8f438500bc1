"""Custom events through the API: `trackEvent` and `POST /api/events` (authentication, roles, workspaces, batch
and body limits, per-item answers, idempotency), and where they show afterwards (Subscriber.events, events,
node, the data export and erasure)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.feedback import Event
from emailkit.domain.audience import subscribers
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.graphql import GQL, data

URL = "/api/events"
TRACK = """
mutation($i: TrackEventInput!) {
  trackEvent(input: $i) {
    event { id type name occurredAt properties provider subscriber { id email } }
    duplicate
    userErrors { field code message }
  }
}
"""
SUBSCRIBER_EVENTS = """
query($id: ID!) {
  subscriber(id: $id) { events(first: 10) { totalCount edges { node { id type name properties occurredAt } } } }
}
"""


async def person(db: Database, email: str = "ada@example.org") -> str:
    async with db.transaction() as session:
        return to_global_id("Subscriber", (await subscribers.create_subscriber(session, email)).id)


async def count_events(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def post_events(client: httpx.AsyncClient, key: str, events: Any, **headers: str) -> httpx.Response:
    return await client.post(URL, json={"events": events}, headers=bearer(key, **headers))


# --- trackEvent ----------------------------------------------------------------------------------------------


async def test_track_event_records_and_shows_it_on_the_subscriber(gql: GQL, db: Database) -> None:
    ada = await person(db)
    out = data(
        await gql(
            TRACK,
            {
                "i": {
                    "email": "ada@example.org",
                    "name": "order.completed",
                    "properties": {"total": 42.5, "items": [{"sku": "A-1", "qty": 2}]},
                    "occurredAt": "2024-03-01T10:00:00+01:00",
                }
            },
        )
    )["trackEvent"]
    assert out["userErrors"] == [] and out["duplicate"] is False
    event = out["event"]
    assert event["type"] == "CUSTOM" and event["provider"] == "api"
    assert (event["name"], event["occurredAt"]) == ("order.completed", "2024-03-01T09:00:00+00:00")
    assert event["properties"] == {"total": 42.5, "items": [{"sku": "A-1", "qty": 2}]}
    assert event["subscriber"] == {"id": ada, "email": "ada@example.org"}
    # By subscriberId too.
    second = data(await gql(TRACK, {"i": {"subscriberId": ada, "name": "trial_ended"}}))["trackEvent"]
    assert second["userErrors"] == [] and second["event"]["properties"] == {}

    listed = data(await gql(SUBSCRIBER_EVENTS, {"id": ada}))["subscriber"]["events"]
    assert listed["totalCount"] == 2
    assert [(e["node"]["name"], e["node"]["properties"]) for e in listed["edges"]] == [
        ("trial_ended", {}),
        ("order.completed", {"total": 42.5, "items": [{"sku": "A-1", "qty": 2}]}),
    ]
    found = data(
        await gql(
            '{ events(filter: {type: CUSTOM, name: "order.completed"}) { edges { node { id name } } } }'
        )
    )["events"]["edges"]
    assert [e["node"]["id"] for e in found] == [event["id"]]
    node = data(
        await gql(
            "query($id: ID!) { node(id: $id) { ... on Event { name properties } } }", {"id": event["id"]}
        )
    )
    assert node["node"]["name"] == "order.completed"


async def test_track_event_with_a_used_key_answers_the_first_event(gql: GQL, db: Database) -> None:
    await person(db)
    item = {"email": "ada@example.org", "name": "paid", "properties": {"n": 1}, "idempotencyKey": "inv-1"}
    first = data(await gql(TRACK, {"i": item}))["trackEvent"]
    again = data(await gql(TRACK, {"i": {**item, "properties": {"n": 2}}}))["trackEvent"]
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert again["event"] == first["event"]
    assert again["userErrors"] == []
    assert await count_events(db) == 1


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"email": "ada@example.org", "subscriberId": "x"}, "email", "INVALID_INPUT"),
        ({}, "email", "REQUIRED"),
        ({"email": "nobody@example.org"}, "email", "SUBSCRIBER_NOT_FOUND"),
        ({"subscriberId": to_global_id("Subscriber", 999_999)}, "subscriberId", "SUBSCRIBER_NOT_FOUND"),
        ({"subscriberId": to_global_id("MailingList", 1)}, "subscriberId", "INVALID_ID"),
        ({"email": "ada@example.org", "name": "has space"}, "name", "INVALID_EVENT_NAME"),
        ({"email": "ada@example.org", "properties": "text"}, "properties", "INVALID_INPUT"),
        ({"email": "ada@example.org", "properties": {"x": "y" * 17000}}, "properties", "TOO_LONG"),
        ({"email": "ada@example.org", "occurredAt": "2999-01-01T00:00:00Z"}, "occurredAt", "OUT_OF_RANGE"),
        ({"email": "ada@example.org", "idempotencyKey": "k" * 256}, "idempotencyKey", "TOO_LONG"),
    ],
)
async def test_track_event_answers_problems_as_user_errors(
    gql: GQL, db: Database, fields: dict[str, Any], field: str, code: str
) -> None:
    await person(db)
    out = data(await gql(TRACK, {"i": {"name": "signed_up", **fields}}))["trackEvent"]
    assert (out["event"], out["duplicate"]) == (None, False)
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(field, code)]
    assert await count_events(db) == 0


async def test_track_event_needs_a_write_role(gql: GQL, db: Database) -> None:
    await person(db)
    viewer = await make_key(db, Role.VIEWER, "viewer")
    body = await gql(TRACK, {"i": {"email": "ada@example.org", "name": "x"}}, key=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    editor = await make_key(db, Role.EDITOR, "editor")
    out = data(await gql(TRACK, {"i": {"email": "ada@example.org", "name": "x"}}, key=editor))["trackEvent"]
    assert out["userErrors"] == []


# --- POST /api/events ----------------------------------------------------------------------------------------


async def test_a_batch_is_answered_item_by_item(
    client: httpx.AsyncClient, gql: GQL, db: Database, admin_key: str
) -> None:
    ada = await person(db)
    resp = await post_events(
        client,
        admin_key,
        [
            {
                "email": "ada@example.org",
                "name": "viewed",
                "properties": {"page": "/pricing"},
                "idempotencyKey": "v1",
            },
            {"subscriberId": ada, "name": "clicked", "occurredAt": "2024-03-01T10:00:00Z"},
            {"email": "nobody@example.org", "name": "viewed"},
            {"email": "ada@example.org", "name": "viewed", "idempotencyKey": "v1"},
            {"email": "ada@example.org", "name": "bad name"},
            "not an object",
            {"email": "ada@example.org", "name": "x", "idempotency_key": "typo"},
            {"email": "ada@example.org"},
        ],
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    results = body["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "recorded"),
        (1, "recorded"),
        (2, "error"),
        (3, "duplicate"),
        (4, "error"),
        (5, "error"),
        (6, "error"),
        (7, "error"),
    ]
    assert results[3]["eventId"] == results[0]["eventId"]
    assert "code" not in results[0] and "eventId" not in results[2]
    assert [(r["code"], r["field"]) for r in results[2:] if r["status"] == "error"] == [
        ("SUBSCRIBER_NOT_FOUND", "email"),
        ("INVALID_EVENT_NAME", "name"),
        ("INVALID_INPUT", None),
        ("INVALID_INPUT", None),
        ("REQUIRED", "name"),
    ]
    assert "idempotency_key" in results[6]["message"]
    # Readable afterwards, properties included.
    listed = data(await gql(SUBSCRIBER_EVENTS, {"id": ada}))["subscriber"]["events"]["edges"]
    assert {(e["node"]["id"], e["node"]["name"], json.dumps(e["node"]["properties"])) for e in listed} == {
        (results[0]["eventId"], "viewed", '{"page": "/pricing"}'),
        (results[1]["eventId"], "clicked", "{}"),
    }
    # A retry of the whole batch records nothing new.
    again = (
        await post_events(
            client, admin_key, [{"email": "ada@example.org", "name": "viewed", "idempotencyKey": "v1"}]
        )
    ).json()
    assert again == {
        "accepted": 0,
        "duplicates": 1,
        "results": [{"index": 0, "status": "duplicate", "eventId": results[0]["eventId"]}],
    }
    assert await count_events(db) == 2


async def test_an_empty_batch_is_fine(client: httpx.AsyncClient, admin_key: str) -> None:
    resp = await post_events(client, admin_key, [])
    assert resp.json() == {"accepted": 0, "duplicates": 0, "results": []}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"events": [{"email": "ada@example.org", "name": "x"}', 400, "INVALID_JSON"),
        (b"", 400, "INVALID_JSON"),
        (b'[{"email": "ada@example.org", "name": "x"}]', 400, "INVALID_INPUT"),
        (b'{"events": {"email": "ada@example.org", "name": "x"}}', 400, "INVALID_INPUT"),
        (b'{"event": []}', 400, "INVALID_INPUT"),
        (
            json.dumps({"events": [{"email": "ada@example.org", "name": "x"}] * 1001}).encode(),
            413,
            "TOO_MANY_EVENTS",
        ),
    ],
    ids=["truncated", "empty", "a list", "events not a list", "no events", "1001 events"],
)
async def test_a_malformed_or_oversized_batch_stores_nothing(
    client: httpx.AsyncClient, db: Database, admin_key: str, body: bytes, status: int, code: str
) -> None:
    await person(db)
    resp = await client.post(
        URL, content=body, headers=bearer(admin_key, **{"Content-Type": "application/json"})
    )
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]
    if status == 413:
        assert error["limit"] == 1000 and "1001" in error["message"]
    assert await count_events(db) == 0


async def test_a_thousand_events_are_one_batch(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    await person(db)
    events = [{"email": "ada@example.org", "name": "tick", "idempotencyKey": f"t{i}"} for i in range(1000)]
    body = (await post_events(client, admin_key, events)).json()
    assert (body["accepted"], len(body["results"])) == (1000, 1000)
    assert await count_events(db) == 1000


async def test_integers_beyond_64_bits_are_json_too(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    await person(db)
    raw = b'{"events": [{"email": "ada@example.org", "name": "big", "properties": {"n": 123456789012345678901234567890}}]}'
    resp = await client.post(URL, content=raw, headers=bearer(admin_key))
    assert resp.json()["accepted"] == 1


async def test_no_key_unknown_key_and_get_are_refused(client: httpx.AsyncClient, db: Database) -> None:
    await person(db)
    events = {"events": [{"email": "ada@example.org", "name": "x"}]}
    missing = await client.post(URL, json=events)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "UNAUTHENTICATED"
    unknown = await client.post(URL, json=events, headers=bearer("ek_neverIssued000000000000000000000"))
    assert unknown.status_code == 401
    assert (await client.get(URL, headers=bearer("ek_x"))).status_code == 405
    assert await count_events(db) == 0


async def test_roles_and_workspaces_are_those_of_the_api(client: httpx.AsyncClient, db: Database) -> None:
    await person(db)
    events = [{"email": "ada@example.org", "name": "x"}]
    viewer = await make_key(db, Role.VIEWER, "viewer")
    refused = await post_events(client, viewer, events)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "FORBIDDEN")
    # A workspace key naming another workspace is refused; an instance key acts in the one it names.
    other = await make_workspace(db, "other")
    editor = await make_key(db, Role.EDITOR, "editor")
    wrong = await post_events(client, editor, events, **{"X-Emailkit-Workspace": "other"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "FORBIDDEN")
    owner = await make_key(db, Role.OWNER, "instance")
    nowhere = await post_events(client, owner, events)
    assert (nowhere.status_code, nowhere.json()["error"]["code"]) == (400, "WORKSPACE_REQUIRED")
    assert await count_events(db) == 0
    named = await post_events(client, owner, events, **{"X-Emailkit-Workspace": "default"})
    assert named.json()["accepted"] == 1
    # The other workspace has no such person: its own key gets SUBSCRIBER_NOT_FOUND.
    theirs = await post_events(client, await make_workspace_key(db, other), events)
    assert theirs.json()["results"][0]["code"] == "SUBSCRIBER_NOT_FOUND"
    assert (await post_events(client, editor, events)).json()["accepted"] == 1


async def test_concurrent_requests_with_one_key_make_one_event(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    await person(db)
    events = [{"email": "ada@example.org", "name": "paid", "idempotencyKey": "same"}]
    answers = await asyncio.gather(*(post_events(client, admin_key, events) for _ in range(4)))
    bodies = [a.json() for a in answers]
    assert sorted(b["accepted"] for b in bodies) == [0, 0, 0, 1]
    assert len({b["results"][0]["eventId"] for b in bodies}) == 1
    assert await count_events(db) == 1


@pytest.fixture
async def limited(db: Database, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        api_rate_limit="3/minute",
        max_request_bytes=64 * 1024,
    )
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


async def test_the_rate_limit_and_body_limit_are_the_apis(
    limited: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    await person(db)
    too_big = [{"email": "ada@example.org", "name": "x", "properties": {"p": "y" * 10_000}}] * 7
    over = await post_events(limited, admin_key, too_big)
    assert (over.status_code, over.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert "EMAILKIT_MAX_REQUEST_BYTES" in over.json()["error"]
    # One budget per key, shared with /graphql (the refused body above counted nothing).
    assert (
        await limited.post("/graphql", json={"query": "{ viewer { name } }"}, headers=bearer(admin_key))
    ).status_code == 200
    events = [{"email": "ada@example.org", "name": "x"}]
    assert (await post_events(limited, admin_key, events)).status_code == 200
    assert (await post_events(limited, admin_key, events)).status_code == 200
    refused = await post_events(limited, admin_key, events)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert await count_events(db) == 2


# --- the data export and erasure -----------------------------------------------------------------------------


async def test_export_shows_and_erasure_removes_the_properties(gql: GQL, db: Database) -> None:
    ada = await person(db)
    item = {"email": "ada@example.org", "name": "address_changed", "properties": {"street": "1 Main St"}}
    data(await gql(TRACK, {"i": item}))
    exported = data(await gql("query($id: ID!) { exportSubscriberData(id: $id) }", {"id": ada}))
    [event] = exported["exportSubscriberData"]["events"]
    assert (event["type"], event["name"], event["properties"]) == (
        "CUSTOM",
        "address_changed",
        {"street": "1 Main St"},
    )
    erased = data(
        await gql(
            "mutation($i: EraseSubscriberInput!) { eraseSubscriber(input: $i) { userErrors { code } } }",
            {"i": {"id": ada}},
        )
    )
    assert erased["eraseSubscriber"]["userErrors"] == []
    async with db.session() as session:
        [row] = (await session.execute(select(Event))).scalars()
    assert (row.name, row.properties, row.subscriber_id, row.email) == ("address_changed", None, None, None)


# --- the README's examples -----------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def sending_events_section() -> str:
    text = README.read_text()
    section = text[text.index("### Sending events") :]
    return section[: section.index("\n### ", 1)]


async def test_the_readme_examples_work_as_written(
    client: httpx.AsyncClient, gql: GQL, db: Database, admin_key: str
) -> None:
    await person(db, "ada@example.com")
    section = sending_events_section()
    [mutation] = re.findall(r"```graphql\n(.*?)```", section, re.S)
    out = data(await gql(mutation))["trackEvent"]
    assert out["userErrors"] == [] and out["event"]["properties"] == {"orderId": "A-1001", "total": 42.5}
    [body] = re.findall(r"-d '(.*?)'\n", section, re.S)
    answer = (await client.post(URL, content=body.encode(), headers=bearer(admin_key))).json()
    # The same idempotency key as the mutation's: a duplicate here (the README shows a first send).
    assert [(r["status"], r.get("code")) for r in answer["results"]] == [
        ("duplicate", None),
        ("error", "SUBSCRIBER_NOT_FOUND"),
    ]
    assert answer["results"][0]["eventId"] == out["event"]["id"]
