"""The audience per workspace over the API: the same address is a subscriber of each workspace apart; lists,
subscribers and segments of another workspace answer exactly like missing ids; counts, estimates and exports
see one workspace. SQLite always, PostgreSQL (with row-level security enforced) when set."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import Subscriber, Suppression
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.domain.counting import CountPrecision, count_matches
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from tests.support.environment import PG_URL, pg_async_url
from tests.support.graphql import GQL, data, graphql_runner, make_list
from tests.support.subscribers import CREATE, create, make_subscriber, total
from tests.support.workspaces import add_workspace, key_of

MISSING_LIST = to_global_id("MailingList", 987654321)
MISSING_SUBSCRIBER = to_global_id("Subscriber", 987654321)
MISSING_SEGMENT = to_global_id("Segment", 987654321)

SUBSCRIBE = """mutation($input: SubscribeToListsInput!) {
  subscribeToLists(input: $input) { subscribers { id } userErrors { field message code } } }"""
UNSUBSCRIBE = """mutation($input: UnsubscribeFromListsInput!) {
  unsubscribeFromLists(input: $input) { subscribers { id } userErrors { field message code } } }"""
SUBSCRIBER_BY = "query($id: ID, $email: String) { subscriber(id: $id, email: $email) { id name } }"
UPDATE = """mutation($i: UpdateSubscriberInput!) {
  updateSubscriber(input: $i) { subscriber { name } userErrors { field message code } } }"""
DELETE = """mutation($i: DeleteSubscriberInput!) {
  deleteSubscriber(input: $i) { deletedId userErrors { field message code } } }"""
PREVIEW = """query($f: SubscriberFilterInput!) {
  segmentPreview(filter: $f) { count sample { email name } userErrors { field message code } } }"""
CREATE_SEGMENT = """mutation($i: CreateSegmentInput!) {
  createSegment(input: $i) { segment { id subscriberCount } userErrors { field message code } } }"""
IMPORT = """mutation($i: ImportSubscribersInput!) {
  importSubscribers(input: $i) { import { id } userErrors { field message code } } }"""
ERASE = """mutation($i: EraseSubscriberInput!) {
  eraseSubscriber(input: $i) { erasedId userErrors { field message code } } }"""
EXPORT_DATA = "query($id: ID!) { exportSubscriberData(id: $id) }"
SUPPRESS = """mutation($i: AddSuppressionInput!) {
  addSuppression(input: $i) { suppression { id } userErrors { field message code } } }"""
UNSUPPRESS = """mutation($i: RemoveSuppressionInput!) {
  removeSuppression(input: $i) { suppression { id } userErrors { field message code } } }"""


@pytest.fixture
async def other(db: Database) -> int:
    """Workspace 2, beside the default workspace the tests act in."""
    return await add_workspace(db, "brand-two")


@pytest.fixture
async def gql2(client: httpx.AsyncClient, db: Database, other: int) -> GQL:
    """The API as an ADMIN key of workspace 2."""
    return graphql_runner(client, await key_of(db, other))


def errors(payload: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    return [(e["field"], e["code"], e["message"]) for e in payload["userErrors"]]


Variables = Callable[[str], dict[str, Any]]


async def same_as_missing(
    gql: GQL, query: str, name: str, variables: Variables, foreign: str, missing: str
) -> str:
    """Run the call naming another workspace's row, then naming no row at all: the userErrors must be the same
    (and there must be some). Returns the error code."""
    answer = data(await gql(query, variables(foreign)))[name]
    expected = data(await gql(query, variables(missing)))[name]
    assert errors(answer) == errors(expected) != [], name
    return str(answer["userErrors"][0]["code"])


async def test_the_same_address_is_a_subscriber_of_each_workspace_apart(gql: GQL, gql2: GQL) -> None:
    one = await make_subscriber(gql, "ann@example.com", name="One")
    two = await make_subscriber(gql2, "Ann@Example.com", name="Two")
    assert one["id"] != two["id"]
    again = await create(gql2, email="ann@example.com")
    assert [e["code"] for e in again["userErrors"]] == ["DUPLICATE_EMAIL"]

    assert data(await gql(SUBSCRIBER_BY, {"email": "ann@example.com"}))["subscriber"]["name"] == "One"
    assert data(await gql2(SUBSCRIBER_BY, {"email": "ann@example.com"}))["subscriber"]["name"] == "Two"
    changed = data(await gql2(UPDATE, {"i": {"id": two["id"], "name": "Two!"}}))["updateSubscriber"]
    assert changed["subscriber"] == {"name": "Two!"}
    assert data(await gql(SUBSCRIBER_BY, {"id": one["id"]}))["subscriber"]["name"] == "One"
    assert (await total(gql), await total(gql2)) == (1, 1)

    # Workspace 1's subscriber, named by id from workspace 2: not found, as a missing id is.
    assert data(await gql2(SUBSCRIBER_BY, {"id": one["id"]}))["subscriber"] is None
    renamed: Variables = lambda sid: {"i": {"id": sid, "name": "X"}}  # noqa: E731
    by_id: Variables = lambda sid: {"i": {"id": sid}}  # noqa: E731
    for query, name, variables in (
        (UPDATE, "updateSubscriber", renamed),
        (DELETE, "deleteSubscriber", by_id),
    ):
        code = await same_as_missing(gql2, query, name, variables, one["id"], MISSING_SUBSCRIBER)
        assert code == "SUBSCRIBER_NOT_FOUND"
    assert data(await gql(SUBSCRIBER_BY, {"id": one["id"]}))["subscriber"]["name"] == "One"


async def test_another_workspaces_list_answers_like_a_missing_one(gql: GQL, gql2: GQL) -> None:
    theirs = await make_list(gql, "Workspace one's list")
    mine = await make_list(gql2, "Mine")
    person = await make_subscriber(gql2, "bob@example.com")
    someone_else = await make_subscriber(gql, "carl@example.com", listIds=[theirs])

    def pair(*list_ids: str) -> Variables:
        return lambda lid: {"input": {"subscriberIds": [person["id"]], "listIds": [*list_ids, lid]}}

    def in_list(lid: str) -> dict[str, Any]:
        return {"list": {"listId": lid}}

    calls: list[tuple[str, str, Variables]] = [
        (SUBSCRIBE, "subscribeToLists", pair()),
        (SUBSCRIBE, "subscribeToLists", pair(mine)),
        (UNSUBSCRIBE, "unsubscribeFromLists", pair()),
        (CREATE, "createSubscriber", lambda lid: {"input": {"email": "new@example.com", "listIds": [lid]}}),
        (IMPORT, "importSubscribers", lambda lid: {"i": {"csv": "email\na@example.com\n", "listIds": [lid]}}),
        (PREVIEW, "segmentPreview", lambda lid: {"f": in_list(lid)}),
        (
            PREVIEW,
            "segmentPreview",
            lambda lid: {"f": {"or": [{"status": "ENABLED"}, {"not": in_list(lid)}]}},
        ),
        (CREATE_SEGMENT, "createSegment", lambda lid: {"i": {"name": "S", "filter": in_list(lid)}}),
    ]
    for query, name, variables in calls:
        assert await same_as_missing(gql2, query, name, variables, theirs, MISSING_LIST) == "LIST_NOT_FOUND"

    # Workspace 1's subscriber in workspace 2's call: not found either.
    code = await same_as_missing(
        gql2,
        SUBSCRIBE,
        "subscribeToLists",
        lambda sid: {"input": {"subscriberIds": [sid], "listIds": [mine]}},
        someone_else["id"],
        MISSING_SUBSCRIBER,
    )
    assert code == "SUBSCRIBER_NOT_FOUND"

    lookups = data(await gql2("query($id: ID!) { list(id: $id) { name } }", {"id": theirs}))
    assert lookups["list"] is None
    assert await total(gql2, listId=theirs) == 0
    # Nothing was subscribed to workspace 1's list on the way.
    assert await total(gql, listId=theirs) == 1


async def test_segment_counts_and_totals_are_per_workspace(gql: GQL, gql2: GQL) -> None:
    berlin = {"City": "Berlin"}
    for i in range(5):
        await make_subscriber(gql, f"p{i}@example.com", attributes=berlin)
    news = await make_list(gql2, "News")
    for i in range(2):
        await make_subscriber(gql2, f"p{i}@example.com", attributes=berlin, listIds=[news])
    await make_subscriber(gql2, "rome@example.com", attributes={"City": "Rome"})

    in_berlin = {"attribute": {"path": "City", "op": "EQ", "value": "Berlin"}}
    one = data(await gql(PREVIEW, {"f": in_berlin}))["segmentPreview"]
    two = data(await gql2(PREVIEW, {"f": in_berlin}))["segmentPreview"]
    assert (one["count"], len(one["sample"])) == (5, 5)
    assert (two["count"], sorted(s["email"] for s in two["sample"])) == (
        2,
        ["p0@example.com", "p1@example.com"],
    )
    everyone = data(await gql2(PREVIEW, {"f": {"not": {"email": {"eq": "nobody@example.com"}}}}))
    assert everyone["segmentPreview"]["count"] == 3
    on_news = data(await gql2(PREVIEW, {"f": {"list": {"listId": news}}}))
    assert on_news["segmentPreview"]["count"] == 2

    segment = data(await gql2(CREATE_SEGMENT, {"i": {"name": "Berliners", "filter": in_berlin}}))[
        "createSegment"
    ]
    assert segment["segment"]["subscriberCount"] == 2
    # Workspace 2's segment from workspace 1: none, like a missing one.
    seg_query = "query($id: ID!) { segment(id: $id) { name } }"
    assert data(await gql(seg_query, {"id": segment["segment"]["id"]}))["segment"] is None
    listed = data(await gql("{ segments(first: 5) { totalCount } }"))["segments"]
    assert listed["totalCount"] == 0
    lists_of_two = data(await gql2("{ lists(first: 5) { totalCount edges { node { subscriberCount } } } }"))
    assert lists_of_two["lists"]["totalCount"] == 1
    assert lists_of_two["lists"]["edges"][0]["node"]["subscriberCount"] == 2
    assert data(await gql("{ lists(first: 5) { totalCount } }"))["lists"]["totalCount"] == 0
    assert (await total(gql), await total(gql2), await total(gql2, search="p0@")) == (5, 3, 1)


@pytest.mark.postgresql_only
async def test_estimated_totals_count_the_workspace_alone(
    gql: GQL, gql2: GQL, db: Database, other: int, runtime: Runtime
) -> None:
    """Past the exact limit PostgreSQL answers the planner's estimate: it must be the workspace's own, not the
    table's (the policies' condition, or an explicit one, restricts the plan)."""
    runtime.exact_count_limit = 10
    async with db.transaction() as s:
        await s.execute(
            insert(Subscriber),
            [{"email": f"one{i}@example.com", "name": ""} for i in range(600)],
        )
    with workspace_scope(other):
        async with db.transaction() as s:
            await s.execute(
                insert(Subscriber),
                [{"email": f"two{i}@example.com", "name": ""} for i in range(40)],
            )
    async with db.engine.begin() as conn:
        await conn.execute(text("ANALYZE subscribers"))
    query = "{ subscribers(first: 1) { totalCount totalCountPrecision } }"
    one = data(await gql(query))["subscribers"]
    two = data(await gql2(query))["subscribers"]
    assert one["totalCountPrecision"] == two["totalCountPrecision"] == "ESTIMATE"
    assert 450 <= one["totalCount"] <= 750
    assert 20 <= two["totalCount"] <= 80

    # A role the policies do not hold (a superuser): the estimated statement names the workspace itself.
    assert PG_URL is not None
    admin = Database(pg_async_url(PG_URL), pool_size=1)
    try:
        with workspace_scope(other):
            async with admin.read_session() as s:
                counted = await count_matches(s, select(Subscriber), limit=10)
    finally:
        await admin.dispose()
    assert counted.precision is CountPrecision.ESTIMATE and 20 <= counted.value <= 80


async def test_the_csv_export_holds_the_workspace_alone(
    client: httpx.AsyncClient, gql: GQL, gql2: GQL, db: Database, other: int
) -> None:
    theirs = await make_list(gql, "Theirs")
    await make_subscriber(gql, "same@example.com", name="One", listIds=[theirs], attributes={"secret": 1})
    await make_subscriber(gql, "only-one@example.com")
    await make_subscriber(gql2, "same@example.com", name="Two", attributes={"plan": "pro"})
    key2 = await key_of(db, other)
    headers = {"Authorization": f"Bearer {key2}"}

    resp = await client.get("/export/subscribers.csv", headers=headers)
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert rows[0] == ["email", "name", "status", "created_at", "plan"]
    assert [r[:2] + r[4:] for r in rows[1:]] == [["same@example.com", "Two", "pro"]]

    segment = data(await gql(CREATE_SEGMENT, {"i": {"name": "All", "filter": {"email": {"contains": "@"}}}}))[
        "createSegment"
    ]["segment"]["id"]
    for param, value, code in (
        ("listId", theirs, "LIST_NOT_FOUND"),
        ("listId", MISSING_LIST, "LIST_NOT_FOUND"),
        ("segmentId", segment, "SEGMENT_NOT_FOUND"),
        ("segmentId", MISSING_SEGMENT, "SEGMENT_NOT_FOUND"),
    ):
        resp = await client.get("/export/subscribers.csv", params={param: value}, headers=headers)
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, code), (param, value)


async def test_gdpr_requests_stay_in_their_workspace(gql: GQL, gql2: GQL, db: Database, other: int) -> None:
    one = await make_subscriber(gql, "jo@example.com", name="One")
    two = await make_subscriber(gql2, "jo@example.com", name="Two")
    # Mail to the address that names no subscriber (transactional), in each workspace.
    for workspace_id in (1, other):
        with workspace_scope(workspace_id):
            async with db.transaction() as s:
                s.add(Delivery(campaign_id=None, email="jo@example.com", status=DeliveryStatus.SENT))

    exported = data(await gql2(EXPORT_DATA, {"id": two["id"]}))["exportSubscriberData"]
    assert exported["profile"]["name"] == "Two" and len(exported["deliveries"]) == 1
    assert data(await gql2(EXPORT_DATA, {"id": one["id"]}))["exportSubscriberData"] is None

    by_id: Variables = lambda sid: {"i": {"id": sid}}  # noqa: E731
    assert await same_as_missing(gql2, ERASE, "eraseSubscriber", by_id, one["id"], MISSING_SUBSCRIBER)
    erased = data(await gql2(ERASE, {"i": {"id": two["id"]}}))["eraseSubscriber"]
    assert erased["userErrors"] == []

    # Workspace 1 keeps its subscriber, its mail to the address, and no trace of the erasure.
    assert data(await gql(SUBSCRIBER_BY, {"id": one["id"]}))["subscriber"]["name"] == "One"
    async with db.session() as s:
        assert list((await s.execute(select(Delivery.email))).scalars()) == ["jo@example.com"]
        assert (await s.execute(select(Suppression))).first() is None
    # Workspace 2 refuses the erased address again; workspace 1 may add it again after deleting it.
    assert [e["code"] for e in (await create(gql2, email="jo@example.com"))["userErrors"]] == ["ERASED"]
    assert data(await gql(DELETE, {"i": {"id": one["id"]}}))["deleteSubscriber"]["userErrors"] == []
    await make_subscriber(gql, "jo@example.com")


async def test_suppressions_are_per_workspace(gql: GQL, gql2: GQL) -> None:
    first = data(await gql(SUPPRESS, {"i": {"email": "s@example.com"}}))["addSuppression"]
    second = data(await gql2(SUPPRESS, {"i": {"email": "s@example.com"}}))["addSuppression"]
    assert first["userErrors"] == second["userErrors"] == []
    by_id: Variables = lambda sid: {"i": {"id": sid}}  # noqa: E731
    missing = to_global_id("Suppression", 987654321)
    code = await same_as_missing(
        gql2, UNSUPPRESS, "removeSuppression", by_id, first["suppression"]["id"], missing
    )
    assert code == "SUPPRESSION_NOT_FOUND"
    removed = data(await gql2(UNSUPPRESS, {"i": {"email": "s@example.com"}}))["removeSuppression"]
    assert removed["suppression"]["id"] == second["suppression"]["id"]
    listed = data(await gql("{ suppressions(first: 5) { totalCount } }"))["suppressions"]
    assert listed["totalCount"] == 1
