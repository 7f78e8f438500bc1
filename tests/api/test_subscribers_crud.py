"""Subscribers through /graphql: create (with its validation), update, delete, look up by address, and what
a viewer key may do."""

from __future__ import annotations

from typing import Any

import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.audience import subscribers as subscriber_service
from tests.support.factories import make_key
from tests.support.graphql import GQL, data, make_list
from tests.support.subscribers import (
    CREATE,
    DELETE,
    SUBSCRIBE,
    SUBSCRIBER_FIELDS,
    UNSUBSCRIBE,
    create,
    emails,
    make_subscriber,
    statuses,
    subscriber_count,
    total,
)

UPDATE = f"""
mutation($input: UpdateSubscriberInput!) {{
  updateSubscriber(input: $input) {{
    subscriber {{ {SUBSCRIBER_FIELDS} }}
    userErrors {{ field code }}
  }}
}}
"""


async def test_create_with_attributes_and_lists(gql: GQL) -> None:
    news = await make_list(gql, "News", "SINGLE")
    offers = await make_list(gql, "Offers", "DOUBLE")
    attributes = {"plan": "pro", "seats": 3, "tags": ["a", "b"], "address": {"city": "Lyon"}}
    out = await create(
        gql, email="  Ada@Example.COM ", name=" Ada ", attributes=attributes, listIds=[news, offers]
    )
    assert out["userErrors"] == []
    sub = out["subscriber"]
    assert sub["email"] == "ada@example.com"
    assert sub["name"] == "Ada"
    assert sub["attributes"] == attributes
    assert sub["status"] == "ENABLED"
    assert statuses(sub) == {"News": "CONFIRMED", "Offers": "UNCONFIRMED"}
    assert {s["list"]["id"] for s in sub["subscriptions"]} == {news, offers}

    got = data(
        await gql(
            "query($id: ID!) { subscriber(id: $id) { email attributes } node(id: $id) { id ... on Subscriber { name } } }",
            {"id": sub["id"]},
        )
    )
    assert got["subscriber"] == {"email": "ada@example.com", "attributes": attributes}
    assert got["node"] == {"id": sub["id"], "name": "Ada"}
    assert await subscriber_count(gql, news) == 1
    assert await subscriber_count(gql, offers) == 1


async def test_explicit_statuses_on_create(gql: GQL) -> None:
    offers = await make_list(gql, "Offers", "DOUBLE")
    sub = await make_subscriber(
        gql, "imported@example.com", listIds=[offers], subscriptionStatus="CONFIRMED", status="ENABLED"
    )
    assert statuses(sub) == {"Offers": "CONFIRMED"}
    assert sub["attributes"] == {}
    assert sub["name"] == ""

    blocked = await create(gql, email="blocked@example.com", status="BLOCKLISTED", listIds=[offers])
    assert blocked == {
        "subscriber": None,
        "userErrors": [
            {
                "field": "listIds",
                "message": "Blocklisted subscribers cannot be subscribed to lists",
                "code": "INVALID_STATE",
            }
        ],
    }
    kept = await make_subscriber(
        gql, "blocked@example.com", status="BLOCKLISTED", listIds=[offers], subscriptionStatus="UNSUBSCRIBED"
    )
    assert kept["status"] == "BLOCKLISTED"
    assert statuses(kept) == {"Offers": "UNSUBSCRIBED"}


async def test_duplicate_email_is_case_insensitive(gql: GQL) -> None:
    await make_subscriber(gql, "ada@example.com")
    out = await create(gql, email="ADA@Example.com")
    assert out["subscriber"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("email", "DUPLICATE_EMAIL")]
    assert await total(gql) == 1


async def test_duplicate_caught_by_the_unique_index(gql: GQL, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent writer can insert the address between our check and our insert."""
    await make_subscriber(gql, "ada@example.com")

    async def never_taken(*_args: Any, **_kwargs: Any) -> bool:
        return False

    monkeypatch.setattr(subscriber_service, "_email_taken", never_taken)
    out = await create(gql, email="Ada@example.com")
    assert out["subscriber"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("email", "DUPLICATE_EMAIL")]

    other = await make_subscriber(gql, "bob@example.com")
    upd = data(await gql(UPDATE, {"input": {"id": other["id"], "email": "ADA@example.com"}}))
    assert upd["updateSubscriber"] == {
        "subscriber": None,
        "userErrors": [{"field": "email", "code": "DUPLICATE_EMAIL"}],
    }
    assert await emails(gql) == ["ada@example.com", "bob@example.com"]


async def test_malformed_or_missing_email(gql: GQL) -> None:
    for bad in ("not-an-email", "a@b@example.com", "ada@", "ada @example.com"):
        out = await create(gql, email=bad)
        assert out["subscriber"] is None
        assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("email", "INVALID_EMAIL")], bad
    out = await create(gql, email="   ")
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("email", "REQUIRED")]
    assert await total(gql) == 0


async def test_all_input_problems_reported_together(gql: GQL) -> None:
    out = await create(gql, email="nope", name="x" * 256, attributes=[1, 2])
    assert sorted((e["field"], e["code"]) for e in out["userErrors"]) == [
        ("attributes", "INVALID_INPUT"),
        ("email", "INVALID_EMAIL"),
        ("name", "TOO_LONG"),
    ]


async def test_unknown_list_creates_nothing(gql: GQL) -> None:
    existing = await make_list(gql, "Existing")
    news = await make_list(gql, "News")
    data(
        await gql(
            "mutation($i: DeleteListInput!) { deleteList(input: $i) { userErrors { code } } }",
            {"i": {"id": news}},
        )
    )
    out = await create(gql, email="ada@example.com", listIds=[existing, news])
    assert out["subscriber"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("listIds", "LIST_NOT_FOUND")]

    wrong_type = await create(gql, email="ada@example.com", listIds=["garbage"])
    assert [(e["field"], e["code"]) for e in wrong_type["userErrors"]] == [("listIds", "INVALID_ID")]

    assert await total(gql) == 0
    assert await subscriber_count(gql, existing) == 0


async def test_attributes_must_be_a_json_object(gql: GQL) -> None:
    for bad in (["a", "b"], "text", 42, True):
        out = await create(gql, email="ada@example.com", attributes=bad)
        assert out["subscriber"] is None
        assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("attributes", "INVALID_INPUT")], bad
    too_big = await create(gql, email="ada@example.com", attributes={"blob": "x" * 70_000})
    assert [(e["field"], e["code"]) for e in too_big["userErrors"]] == [("attributes", "TOO_LONG")]
    assert await total(gql) == 0


async def test_update_subscriber(gql: GQL) -> None:
    news = await make_list(gql, "News")
    sub = await make_subscriber(
        gql, "ada@example.com", name="Ada", attributes={"a": 1, "b": 2}, listIds=[news]
    )
    await make_subscriber(gql, "bob@example.com")

    upd = data(await gql(UPDATE, {"input": {"id": sub["id"], "name": "Ada L.", "attributes": {"c": [3]}}}))[
        "updateSubscriber"
    ]
    assert upd["userErrors"] == []
    assert upd["subscriber"]["name"] == "Ada L."
    assert upd["subscriber"]["email"] == "ada@example.com"
    assert upd["subscriber"]["attributes"] == {"c": [3]}

    dup = data(await gql(UPDATE, {"input": {"id": sub["id"], "email": "Bob@Example.com"}}))[
        "updateSubscriber"
    ]
    assert dup == {"subscriber": None, "userErrors": [{"field": "email", "code": "DUPLICATE_EMAIL"}]}

    same_case = data(await gql(UPDATE, {"input": {"id": sub["id"], "email": "ADA@example.com"}}))
    assert same_case["updateSubscriber"]["userErrors"] == []

    moved = data(await gql(UPDATE, {"input": {"id": sub["id"], "email": "Ada@New.example"}}))
    assert moved["updateSubscriber"]["subscriber"]["email"] == "ada@new.example"

    bad_attrs = data(await gql(UPDATE, {"input": {"id": sub["id"], "attributes": ["x"]}}))
    assert bad_attrs["updateSubscriber"]["userErrors"] == [{"field": "attributes", "code": "INVALID_INPUT"}]

    blocked = data(await gql(UPDATE, {"input": {"id": sub["id"], "status": "BLOCKLISTED"}}))[
        "updateSubscriber"
    ]
    assert blocked["subscriber"]["status"] == "BLOCKLISTED"
    assert statuses(blocked["subscriber"]) == {"News": "UNSUBSCRIBED"}
    assert blocked["subscriber"]["attributes"] == {"c": [3]}

    missing = data(await gql(UPDATE, {"input": {"id": "U3Vic2NyaWJlcjo5OTk5", "name": "x"}}))
    assert missing["updateSubscriber"]["userErrors"] == [{"field": "id", "code": "SUBSCRIBER_NOT_FOUND"}]


async def test_delete_subscriber(gql: GQL) -> None:
    news = await make_list(gql, "News")
    sub = await make_subscriber(gql, "ada@example.com", listIds=[news])
    assert await subscriber_count(gql, news) == 1

    out = data(await gql(DELETE, {"input": {"id": sub["id"]}}))["deleteSubscriber"]
    assert out == {"deletedId": sub["id"], "userErrors": []}
    assert await subscriber_count(gql, news) == 0
    assert data(await gql("query($id: ID!) { subscriber(id: $id) { id } }", {"id": sub["id"]})) == {
        "subscriber": None
    }
    again = data(await gql(DELETE, {"input": {"id": sub["id"]}}))["deleteSubscriber"]
    assert again == {"deletedId": None, "userErrors": [{"field": "id", "code": "SUBSCRIBER_NOT_FOUND"}]}

    # The address is free again.
    await make_subscriber(gql, "ada@example.com")


async def test_lookup_by_email(gql: GQL) -> None:
    sub = await make_subscriber(gql, "ada@example.com", name="Ada")
    q = "query($e: String, $id: ID) { subscriber(email: $e, id: $id) { id name } }"
    assert data(await gql(q, {"e": " ADA@Example.com"}))["subscriber"] == {"id": sub["id"], "name": "Ada"}
    assert data(await gql(q, {"e": "nobody@example.com"}))["subscriber"] is None
    assert data(await gql(q, {"e": "not an email"}))["subscriber"] is None
    assert data(await gql(q, {"id": "TWFpbGluZ0xpc3Q6MQ"}))["subscriber"] is None
    for variables in ({}, {"e": "ada@example.com", "id": sub["id"]}):
        body = await gql(q, variables)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


async def test_viewer_may_read_but_not_write(gql: GQL, db: Database) -> None:
    news = await make_list(gql, "News")
    sub = await make_subscriber(gql, "ada@example.com", listIds=[news])
    viewer = await make_key(db, Role.VIEWER, "viewer")

    writes: list[tuple[str, dict[str, Any]]] = [
        (CREATE, {"email": "eve@example.com"}),
        (UPDATE, {"id": sub["id"], "name": "Eve"}),
        (DELETE, {"id": sub["id"]}),
        (SUBSCRIBE, {"subscriberIds": [sub["id"]], "listIds": [news]}),
        (UNSUBSCRIBE, {"subscriberIds": [sub["id"]], "listIds": [news]}),
    ]
    for mutation, variables in writes:
        body = await gql(mutation, {"input": variables}, key=viewer)
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]

    assert await emails(gql) == ["ada@example.com"]
    read = data(await gql("{ subscribers { edges { node { name subscriptions { status } } } } }", key=viewer))
    assert read["subscribers"]["edges"] == [
        {"node": {"name": "", "subscriptions": [{"status": "CONFIRMED"}]}}
    ]
