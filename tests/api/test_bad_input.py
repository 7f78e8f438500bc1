"""Input that used to end in "Unexpected error." or HTTP 500 (found by fuzzing): malformed cursors, ids
beyond 64 bits, text no database can store, a list deleted while subscribing to it. Each now gets a coded
userError, a coded GraphQL error or a 4xx."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from emailkit import globalid
from emailkit.db.engine import Database
from tests.support.graphql import GQL, data

HUGE = 2**64 + 1
CONNECTIONS = [
    "lists",
    "apiKeys",
    "subscribers",
    "templates",
    "campaigns",
    "segments",
    "suppressions",
    "imports",
]


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


def no_internal_error(body: dict[str, Any]) -> None:
    for error in body.get("errors") or []:
        assert error["message"] != "Unexpected error.", body
        assert error.get("extensions", {}).get("code"), body


async def create_list(gql: GQL, name: str = "News") -> str:
    body = await gql(
        "mutation($i: CreateListInput!) { createList(input: $i) { list { id } userErrors { code } } }",
        {"i": {"name": name, "optin": "SINGLE", "visibility": "PUBLIC"}},
    )
    list_id: str = data(body)["createList"]["list"]["id"]
    return list_id


@pytest.mark.parametrize("connection", CONNECTIONS)
@pytest.mark.parametrize(
    "cursor",
    [
        "é",  # not ASCII: base64 itself refuses it
        "\u2603abc",
        globalid.encode("k", HUGE),  # "k:<huge>": beyond any key
        "azoxOTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # k:1999… (30 digits)
        "azrCsg",  # "k:²": a digit to str.isdigit, not to int()
    ],
)
async def test_malformed_cursors_are_invalid_cursor(gql: GQL, connection: str, cursor: str) -> None:
    body = await gql(f"query($a: String) {{ {connection}(after: $a) {{ totalCount }} }}", {"a": cursor})
    assert codes(body) == ["INVALID_CURSOR"], body


async def test_nested_connection_cursor(gql: GQL) -> None:
    list_id = await create_list(gql)
    body = await gql(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } } }",
        {"i": {"email": "a@example.com", "listIds": [list_id]}},
    )
    subscriber = data(body)["createSubscriber"]["subscriber"]["id"]
    body = await gql(
        'query($id: ID!) { subscriber(id: $id) { events(after: "ü") { totalCount } } }', {"id": subscriber}
    )
    assert codes(body) == ["INVALID_CURSOR"], body


async def test_ids_beyond_64_bits(gql: GQL) -> None:
    huge_list = globalid.encode("MailingList", HUGE)
    edge_list = globalid.encode("MailingList", 2**63)  # one past the largest bigint
    for value in (huge_list, edge_list):
        body = await gql("query($id: ID!) { list(id: $id) { id } node(id: $id) { id } }", {"id": value})
        assert data(body) == {"list": None, "node": None}

    body = await gql(
        "query($id: ID!) { campaign(id: $id) { id } template(id: $id) { id } segment(id: $id) { id } "
        "subscriber(id: $id) { id } delivery(id: $id) { id } import(id: $id) { id } }",
        {"id": globalid.encode("Campaign", HUGE)},
    )
    no_internal_error(body)

    body = await gql(
        "mutation($i: UpdateListInput!) { updateList(input: $i) { list { id } userErrors { field code } } }",
        {"i": {"id": huge_list, "name": "x"}},
    )
    assert data(body)["updateList"] == {"list": None, "userErrors": [{"field": "id", "code": "INVALID_ID"}]}

    body = await gql(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { field code } } }",
        {"i": {"email": "b@example.com", "listIds": [huge_list]}},
    )
    assert data(body)["createSubscriber"]["userErrors"] == [{"field": "listIds", "code": "INVALID_ID"}]

    body = await gql(
        "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { userErrors { field code } } }",
        {"i": {"id": globalid.encode("Campaign", HUGE)}},
    )
    assert data(body)["startCampaign"]["userErrors"] == [{"field": "id", "code": "INVALID_ID"}]

    body = await gql("query($id: ID!) { subscribers(listId: $id) { totalCount } }", {"id": huge_list})
    no_internal_error(body)


NUL = "a\x00b"


@pytest.mark.parametrize(
    ("mutation", "input_type", "value", "field"),
    [
        ("createList", "CreateListInput", {"name": NUL, "optin": "SINGLE"}, "name"),
        ("createList", "CreateListInput", {"name": "ok", "optin": "SINGLE", "tags": ["x", NUL]}, "tags[1]"),
        ("createSubscriber", "CreateSubscriberInput", {"email": "c@example.com", "name": NUL}, "name"),
        (
            "createSubscriber",
            "CreateSubscriberInput",
            {"email": "c@example.com", "attributes": {"city": {"street": NUL}}},
            "attributes.city.street",
        ),
        (
            "createSubscriber",
            "CreateSubscriberInput",
            {"email": "c@example.com", "attributes": {"ci\x00ty": 1}},
            "attributes",
        ),
        (
            "createTemplate",
            "CreateTemplateInput",
            {"name": "t", "kind": "CAMPAIGN", "format": "HTML", "body": "<p>" + NUL + "</p>"},
            "body",
        ),
        (
            "createCampaign",
            "CreateCampaignInput",
            {
                "name": "c",
                "subject": NUL,
                "fromEmail": "news@example.com",
                "body": "<p>x</p>",
                "format": "HTML",
            },
            "subject",
        ),
    ],
)
async def test_text_no_database_can_store_is_invalid_text(
    gql: GQL, mutation: str, input_type: str, value: dict[str, Any], field: str
) -> None:
    body = await gql(
        f"mutation($i: {input_type}!) {{ {mutation}(input: $i) {{ userErrors {{ field message code }} }} }}",
        {"i": value},
    )
    errors = data(body)[mutation]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [(field, "INVALID_TEXT")], errors


async def test_unpaired_surrogate(client: httpx.AsyncClient, admin_key: str) -> None:
    """JSON may escape half a surrogate pair ("\\ud800"); no database can store it as text."""
    body = json.dumps(
        {
            "query": "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { field code } } }",
            "variables": {"i": {"email": "c@example.com", "name": "lone \ud800 surrogate"}},
        }
    )
    assert "\\ud800" in body
    resp = await client.post(
        "/graphql",
        content=body,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    assert data(resp.json())["createSubscriber"]["userErrors"] == [{"field": "name", "code": "INVALID_TEXT"}]


async def test_nul_in_a_literal_of_the_document(gql: GQL) -> None:
    body = await gql(
        'mutation { createList(input: { name: "a\\u0000b", optin: SINGLE }) { userErrors { field code } } }'
    )
    assert data(body)["createList"]["userErrors"] == [{"field": "name", "code": "INVALID_TEXT"}]
    body = await gql('{ lists(search: "a\\u0000") { totalCount } }')
    assert codes(body) == ["INVALID_TEXT"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($s: String) { lists(search: $s) { totalCount } }", {"s": NUL}),
        ("query($s: String) { subscribers(search: $s) { totalCount } }", {"s": NUL}),
        ("query($s: String) { suppressions(search: $s) { totalCount } }", {"s": NUL}),
        ("query($s: String) { subscriber(email: $s) { id } }", {"s": NUL}),
        (
            "query($f: SubscriberFilterInput!) { segmentPreview(filter: $f) { count } }",
            {"f": {"attribute": {"path": "city", "op": "EQ", "value": NUL}}},
        ),
        (
            "query($f: SubscriberFilterInput!) { segmentPreview(filter: $f) { count } }",
            {"f": {"name": {"contains": NUL}}},
        ),
    ],
)
async def test_text_no_database_can_store_in_queries(gql: GQL, query: str, variables: dict[str, Any]) -> None:
    assert codes(await gql(query, variables)) == ["INVALID_TEXT"]


async def test_csv_import_reports_nul_per_row(gql: GQL) -> None:
    """The import keeps its own per-row report for NUL cells rather than refusing the whole file."""
    body = await gql(
        "mutation($i: ImportSubscribersInput!) { importSubscribers(input: $i) { import { id } userErrors { code } } }",
        {"i": {"csv": "email,name\na@example.com,A\x00\n"}},
    )
    assert data(body)["importSubscribers"]["userErrors"] == []


@pytest.mark.postgresql_only
@pytest.mark.parametrize("mutation", ["createSubscriber", "subscribeToLists"])
async def test_list_deleted_while_subscribing_is_list_not_found(
    gql: GQL, db: Database, mutation: str
) -> None:
    """deleteList commits between the mutation's check of the list and its insert: the insert waits on the
    list's lock, then finds it gone — LIST_NOT_FOUND, as if it never existed."""
    list_id = await create_list(gql)
    pk = globalid.pk_of(list_id, "MailingList")
    if mutation == "createSubscriber":
        query = "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { field code } } }"
        variables = {"i": {"email": "race@example.com", "listIds": [list_id]}}
    else:
        created = await gql(
            "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } } }",
            {"i": {"email": "race@example.com"}},
        )
        subscriber = data(created)["createSubscriber"]["subscriber"]["id"]
        query = "mutation($i: SubscribeToListsInput!) { subscribeToLists(input: $i) { userErrors { field code } } }"
        variables = {"i": {"subscriberIds": [subscriber], "listIds": [list_id]}}
    async with db.engine.connect() as deleter:
        await deleter.execute(text("DELETE FROM lists WHERE id = :id"), {"id": pk})
        request = asyncio.ensure_future(gql(query, variables))
        async with db.engine.connect() as watcher:
            for _ in range(500):
                waiting = (
                    await watcher.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()"
                        )
                    )
                ).scalar_one()
                if waiting or request.done():
                    break
                await asyncio.sleep(0.01)
        assert not request.done(), request.result()
        await deleter.commit()
    body = await request
    assert data(body)[mutation] == {"userErrors": [{"field": "listIds", "code": "LIST_NOT_FOUND"}]}


@pytest.mark.parametrize("as_json", [False, True])
async def test_public_subscribe_refuses_huge_list_ids_and_nul(
    client: httpx.AsyncClient, gql: GQL, as_json: bool
) -> None:
    list_id = await create_list(gql)
    cases = [
        {"email": "p@example.com", "lists": "99999999999999999999999"},
        {"email": "p@example.com", "lists": globalid.encode("MailingList", HUGE)},
        {"email": "p@example.com", "name": "P\x00", "lists": list_id},
        {"email": "p\x00@example.com", "lists": list_id},
    ]
    for case in cases:
        if as_json:
            resp = await client.post("/subscribe", json=case)
        else:
            resp = await client.post("/subscribe", data=case)
        assert resp.status_code == 400, (case, resp.text)
    ok = await client.post("/subscribe", data={"email": "p@example.com", "name": "P", "lists": list_id})
    assert ok.status_code == 200, ok.text


async def test_export_refuses_list_ids_beyond_64_bits(client: httpx.AsyncClient, admin_key: str) -> None:
    for pk in (HUGE, 2**63):
        resp = await client.get(
            "/export/subscribers.csv",
            params={"listId": globalid.encode("MailingList", pk)},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] == {"message": "listId: not a valid MailingList ID", "code": "INVALID_ID"}
