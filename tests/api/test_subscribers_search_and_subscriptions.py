"""Subscribers through /graphql: searching and paging them, subscribing them to lists and unsubscribing them,
and a page of them with their subscriptions loaded in batches."""

from __future__ import annotations

from typing import Any

from emailkit.db.engine import Database
from tests.support.database import recorded_statements
from tests.support.graphql import GQL, data, make_list
from tests.support.subscribers import (
    DELETE,
    SEARCH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    emails,
    make_subscriber,
    statuses,
    subscriber_count,
    total,
)


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
