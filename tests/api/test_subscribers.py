from __future__ import annotations

from typing import Any

import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.audience import subscribers as subscriber_service
from tests.support.database import recorded_statements
from tests.support.factories import make_key
from tests.support.graphql import GQL, data, make_list

SUBSCRIBER_FIELDS = """
id email name attributes status createdAt updatedAt
subscriptions { list { id name } status createdAt updatedAt }
"""

CREATE = f"""
mutation($input: CreateSubscriberInput!) {{
  createSubscriber(input: $input) {{
    subscriber {{ {SUBSCRIBER_FIELDS} }}
    userErrors {{ field message code }}
  }}
}}
"""

UPDATE = f"""
mutation($input: UpdateSubscriberInput!) {{
  updateSubscriber(input: $input) {{
    subscriber {{ {SUBSCRIBER_FIELDS} }}
    userErrors {{ field code }}
  }}
}}
"""

SUBSCRIBE = """
mutation($input: SubscribeToListsInput!) {
  subscribeToLists(input: $input) {
    subscribers { email subscriptions { list { name } status updatedAt } }
    userErrors { field code }
  }
}
"""

UNSUBSCRIBE = """
mutation($input: UnsubscribeFromListsInput!) {
  unsubscribeFromLists(input: $input) {
    subscribers { email subscriptions { list { name } status updatedAt } }
    userErrors { field code }
  }
}
"""

DELETE = """
mutation($input: DeleteSubscriberInput!) {
  deleteSubscriber(input: $input) { deletedId userErrors { field code } }
}
"""

SEARCH = """
query($first: Int, $after: String, $search: String, $listId: ID, $status: SubscriberStatus,
      $subscriptionStatus: SubscriptionStatus) {
  subscribers(first: $first, after: $after, search: $search, listId: $listId, status: $status,
              subscriptionStatus: $subscriptionStatus) {
    totalCount
    edges { cursor node { email } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def create(gql: GQL, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"input": fields}))["createSubscriber"]
    return out


async def make_subscriber(gql: GQL, email: str, **fields: Any) -> dict[str, Any]:
    out = await create(gql, email=email, **fields)
    assert out["userErrors"] == [], out["userErrors"]
    subscriber: dict[str, Any] = out["subscriber"]
    return subscriber


async def emails(gql: GQL, **variables: Any) -> list[str]:
    conn = data(await gql(SEARCH, variables))["subscribers"]
    return [e["node"]["email"] for e in conn["edges"]]


async def total(gql: GQL, **variables: Any) -> int:
    count: int = data(await gql(SEARCH, variables))["subscribers"]["totalCount"]
    return count


def statuses(subscriber: dict[str, Any]) -> dict[str, str]:
    return {s["list"]["name"]: s["status"] for s in subscriber["subscriptions"]}


async def subscriber_count(gql: GQL, list_id: str) -> int:
    n: int = data(await gql("query($id: ID!) { list(id: $id) { subscriberCount } }", {"id": list_id}))[
        "list"
    ]["subscriberCount"]
    return n


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


async def test_filters_by_list_status_and_search(gql: GQL) -> None:
    news = await make_list(gql, "News")
    offers = await make_list(gql, "Offers", "DOUBLE")
    await make_subscriber(gql, "ada@example.com", name="Ada Lovelace", listIds=[news, offers])
    await make_subscriber(gql, "bob@example.org", name="Bob", listIds=[news])
    carol = await make_subscriber(gql, "carol@example.com", name="Carol_X", status="BLOCKLISTED")
    await make_subscriber(gql, "dave@example.net", name="100% Dave")

    assert await emails(gql, listId=news) == ["ada@example.com", "bob@example.org"]
    assert await emails(gql, listId=offers) == ["ada@example.com"]
    assert await emails(gql, listId=offers, subscriptionStatus="UNCONFIRMED") == ["ada@example.com"]
    assert await emails(gql, listId=news, subscriptionStatus="UNCONFIRMED") == []
    assert await emails(gql, status="BLOCKLISTED") == [carol["email"]]
    assert await total(gql, status="ENABLED") == 3

    assert await emails(gql, search="EXAMPLE.COM") == ["ada@example.com", "carol@example.com"]
    assert await emails(gql, search="lovelace") == ["ada@example.com"]
    assert await emails(gql, search="bOb") == ["bob@example.org"]
    # LIKE wildcards in the search text match themselves only.
    assert await emails(gql, search="_") == ["carol@example.com"]
    assert await emails(gql, search="%") == ["dave@example.net"]
    assert await total(gql, search="example", listId=news, status="ENABLED") == 2

    body = await gql(SEARCH, {"listId": "not-a-list-id"})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ID"


async def test_pagination(gql: GQL) -> None:
    for i in range(5):
        await make_subscriber(gql, f"user{i}@example.com")
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        conn = data(await gql(SEARCH, {"first": 2, "after": after}))["subscribers"]
        assert conn["totalCount"] == 5
        seen += [e["node"]["email"] for e in conn["edges"]]
        pages += 1
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
        assert after == conn["edges"][-1]["cursor"]
    assert pages == 3
    assert seen == [f"user{i}@example.com" for i in range(5)]

    body = await gql(SEARCH, {"first": 251})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


async def test_subscribe_is_idempotent_and_follows_optin(gql: GQL) -> None:
    single = await make_list(gql, "Single", "SINGLE")
    double = await make_list(gql, "Double", "DOUBLE")
    ada = await make_subscriber(gql, "ada@example.com")
    bob = await make_subscriber(gql, "bob@example.com", listIds=[single])
    both = [ada["id"], bob["id"]]

    out = data(await gql(SUBSCRIBE, {"input": {"subscriberIds": both, "listIds": [single, double]}}))[
        "subscribeToLists"
    ]
    assert out["userErrors"] == []
    assert [s["email"] for s in out["subscribers"]] == ["ada@example.com", "bob@example.com"]
    first_round = {s["email"]: s["subscriptions"] for s in out["subscribers"]}
    for sub in out["subscribers"]:
        assert statuses(sub) == {"Single": "CONFIRMED", "Double": "UNCONFIRMED"}

    again = data(
        await gql(SUBSCRIBE, {"input": {"subscriberIds": both + both, "listIds": [double, single, double]}})
    )["subscribeToLists"]
    assert {s["email"]: s["subscriptions"] for s in again["subscribers"]} == first_round
    assert await subscriber_count(gql, single) == 2
    assert await subscriber_count(gql, double) == 2

    confirmed = data(
        await gql(
            SUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": [double], "status": "CONFIRMED"}}
        )
    )["subscribeToLists"]
    assert statuses(confirmed["subscribers"][0]) == {"Single": "CONFIRMED", "Double": "CONFIRMED"}

    # A live subscription keeps its status when subscribed again without one.
    kept = data(await gql(SUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": [double]}}))
    assert statuses(kept["subscribeToLists"]["subscribers"][0])["Double"] == "CONFIRMED"


async def test_unsubscribe_and_resubscribe(gql: GQL) -> None:
    single = await make_list(gql, "Single", "SINGLE")
    double = await make_list(gql, "Double", "DOUBLE")
    other = await make_list(gql, "Other")
    ada = await make_subscriber(
        gql, "ada@example.com", listIds=[single, double], subscriptionStatus="CONFIRMED"
    )

    out = data(
        await gql(UNSUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": [single, double, other]}})
    )["unsubscribeFromLists"]
    assert out["userErrors"] == []
    assert statuses(out["subscribers"][0]) == {"Single": "UNSUBSCRIBED", "Double": "UNSUBSCRIBED"}
    assert await subscriber_count(gql, single) == 0

    again = data(
        await gql(UNSUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": [single, double]}})
    )
    assert (
        again["unsubscribeFromLists"]["subscribers"][0]["subscriptions"]
        == out["subscribers"][0]["subscriptions"]
    )

    # Unsubscribed members stay visible under the list filter with their state.
    assert await emails(gql, listId=single, subscriptionStatus="UNSUBSCRIBED") == ["ada@example.com"]

    back = data(await gql(SUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": [single, double]}}))
    assert statuses(back["subscribeToLists"]["subscribers"][0]) == {
        "Single": "CONFIRMED",
        "Double": "UNCONFIRMED",
    }
    assert await subscriber_count(gql, single) == 1


async def test_bulk_subscription_errors_change_nothing(gql: GQL) -> None:
    news = await make_list(gql, "News")
    ada = await make_subscriber(gql, "ada@example.com")
    blocked = await make_subscriber(gql, "blocked@example.com", status="BLOCKLISTED")
    gone = await make_subscriber(gql, "gone@example.com")
    data(await gql(DELETE, {"input": {"id": gone["id"]}}))

    cases: list[tuple[dict[str, Any], list[dict[str, str]]]] = [
        (
            {"subscriberIds": [ada["id"], gone["id"]], "listIds": [news]},
            [{"field": "subscriberIds", "code": "SUBSCRIBER_NOT_FOUND"}],
        ),
        (
            {"subscriberIds": [ada["id"]], "listIds": [news, "TWFpbGluZ0xpc3Q6OTk5OQ"]},
            [{"field": "listIds", "code": "LIST_NOT_FOUND"}],
        ),
        (
            {"subscriberIds": [ada["id"], blocked["id"]], "listIds": [news]},
            [{"field": "subscriberIds", "code": "INVALID_STATE"}],
        ),
        (
            {"subscriberIds": [], "listIds": []},
            [
                {"field": "subscriberIds", "code": "REQUIRED"},
                {"field": "listIds", "code": "REQUIRED"},
            ],
        ),
        ({"subscriberIds": [news], "listIds": [news]}, [{"field": "subscriberIds", "code": "INVALID_ID"}]),
    ]
    for variables, expected in cases:
        out = data(await gql(SUBSCRIBE, {"input": variables}))["subscribeToLists"]
        assert out == {"subscribers": [], "userErrors": expected}, variables
    assert await subscriber_count(gql, news) == 0

    unsub = data(
        await gql(
            UNSUBSCRIBE, {"input": {"subscriberIds": [ada["id"]], "listIds": ["TWFpbGluZ0xpc3Q6OTk5OQ"]}}
        )
    )["unsubscribeFromLists"]
    assert unsub == {"subscribers": [], "userErrors": [{"field": "listIds", "code": "LIST_NOT_FOUND"}]}


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


async def test_page_with_subscriptions_and_lists_is_batched(gql: GQL, db: Database) -> None:
    lists = [await make_list(gql, f"L{i}", "DOUBLE" if i % 2 else "SINGLE") for i in range(3)]
    ids = [(await make_subscriber(gql, f"user{i}@example.com"))["id"] for i in range(30)]
    data(await gql(SUBSCRIBE, {"input": {"subscriberIds": ids, "listIds": lists}}))

    with recorded_statements(db) as statements:
        page = data(
            await gql(
                "{ subscribers(first: 30) { totalCount edges { node { email subscriptions "
                "{ status list { name subscriberCount } } } } } }"
            )
        )["subscribers"]
    assert page["totalCount"] == 30
    assert all(len(e["node"]["subscriptions"]) == 3 for e in page["edges"])

    def touching(table: str) -> int:
        return sum(1 for s in statements if f"FROM {table}" in s.replace('"', ""))

    assert touching("subscriptions") == 2  # the subscriptions batch and the subscriber counts batch
    assert touching("lists") == 1
    assert touching("subscribers") == 2  # the page and totalCount
