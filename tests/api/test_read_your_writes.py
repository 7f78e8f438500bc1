"""Read-your-writes: once a mutation (or a provider's webhook) has returned, the next read shows its effect —
on the process that wrote and on another API process of the same deployment (``serve --workers 2`` sends a
frontend's next request to either). Every read is made once before the write, so a cache of any kind
(parsed queries, persisted queries, counters, loaders) would be warm and show the old value.

The reads are those bench/api.py times (tests/api/test_read_statements.py), plus list counts and names.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from tests.api.test_read_statements import CAMPAIGN, CAMPAIGNS, PAGES, SEGMENT
from tests.support.environment import TEST_SECRET
from tests.support.feedback import seed_sent_campaign
from tests.support.graphql import GQL, data, graphql_runner, make_list

LISTS = "{ lists(first: 50) { edges { node { id name subscriberCount } } } }"


@pytest.fixture
async def other_process(db: Database, settings: Settings, admin_key: str) -> AsyncIterator[GQL]:
    """A second API process: its own app, runtime and connection pool on the same database."""
    engine = Database(db.url, pool_size=2)
    app = create_app(settings, Runtime(db=engine, secret_key=TEST_SECRET, public_url=settings.public_url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield graphql_runner(c, admin_key)
    await engine.dispose()


async def mutate(gql: GQL, mutation: str, field: str, variables: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = data(await gql(mutation, {"input": variables}))[field]
    assert payload["userErrors"] == [], payload
    return payload


class Reads:
    """Every read of the test, made through both processes; each call returns what both saw (asserted equal)."""

    def __init__(self, here: GQL, there: GQL) -> None:
        self.processes = (here, there)

    async def both(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        seen = [data(await gql(query, variables or {})) for gql in self.processes]
        assert seen[0] == seen[1], seen
        return seen[0]

    async def people(self, read: str = "page_count", **arguments: Any) -> list[dict[str, Any]]:
        page = (await self.both(PAGES[read], {"n": 50, **arguments}))["subscribers"]
        nodes = [e["node"] for e in page["edges"]]
        if "totalCount" in page:
            assert page["totalCount"] == len(nodes)
        return nodes

    async def search(self, term: str) -> list[str]:
        query = (
            PAGES["search_count"]
            .replace('search: "user"', "search: $term")
            .replace("query($n: Int!)", "query($n: Int!, $term: String)")
        )
        page = (await self.both(query, {"n": 50, "term": term}))["subscribers"]
        return [e["node"]["name"] for e in page["edges"]]

    async def in_city(self, city: str) -> list[str]:
        query = (
            PAGES["filter"]
            .replace('value: "Bonn"', "value: $city")
            .replace("query($n: Int!)", "query($n: Int!, $city: JSON)")
        )
        page = (await self.both(query, {"n": 50, "city": city}))["subscribers"]
        return [e["node"]["email"] for e in page["edges"]]

    async def segment(self) -> int:
        count: int = (await self.both(SEGMENT, {"plan": "team"}))["segmentPreview"]["count"]
        return count

    async def lists(self, *ids: str) -> dict[str, tuple[str, int]]:
        nodes = [e["node"] for e in (await self.both(LISTS))["lists"]["edges"]]
        return {n["id"]: (n["name"], n["subscriberCount"]) for n in nodes if n["id"] in ids}

    async def everything(self, *list_ids: str) -> None:
        """Warm whatever could be cached: every read once."""
        for read in PAGES:
            await self.both(PAGES[read], {"n": 50})
        await self.search("ada")
        await self.in_city("Bonn")
        await self.segment()
        await self.lists(*list_ids)


@pytest.fixture
def reads(gql: GQL, other_process: GQL) -> Reads:
    return Reads(gql, other_process)


CREATE = """mutation($input: CreateSubscriberInput!) { createSubscriber(input: $input) {
  subscriber { id } userErrors { code } } }"""
UPDATE = """mutation($input: UpdateSubscriberInput!) { updateSubscriber(input: $input) {
  subscriber { id } userErrors { code } } }"""
SUBSCRIBE = """mutation($input: SubscribeToListsInput!) { subscribeToLists(input: $input) {
  userErrors { code } } }"""
UNSUBSCRIBE = """mutation($input: UnsubscribeFromListsInput!) { unsubscribeFromLists(input: $input) {
  userErrors { code } } }"""
UPDATE_LIST = (
    """mutation($input: UpdateListInput!) { updateList(input: $input) { list { id } userErrors { code } } }"""
)
DELETE = (
    """mutation($input: DeleteSubscriberInput!) { deleteSubscriber(input: $input) { userErrors { code } } }"""
)


async def test_subscriber_and_list_changes_are_read_at_once(gql: GQL, reads: Reads) -> None:
    first, second = await make_list(gql, "Weekly"), await make_list(gql, "Offers")
    await reads.everything(first, second)
    assert await reads.people() == []

    created = await mutate(
        gql,
        CREATE,
        "createSubscriber",
        {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "attributes": {"city": "Bonn", "plan": "team", "age": 61, "language": "en"},
            "listIds": [first],
        },
    )
    ada = created["subscriber"]["id"]
    (person,) = await reads.people()
    assert person["name"] == "Ada Lovelace" and person["attributes"]["city"] == "Bonn"
    assert [(s["list"]["name"], s["status"]) for s in person["subscriptions"]] == [("Weekly", "CONFIRMED")]
    assert await reads.search("lovelace") == ["Ada Lovelace"]
    assert await reads.in_city("Bonn") == ["ada@example.com"]
    assert await reads.segment() == 1
    assert await reads.lists(first, second) == {first: ("Weekly", 1), second: ("Offers", 0)}

    await mutate(
        gql,
        UPDATE,
        "updateSubscriber",
        {"id": ada, "name": "Ada King", "attributes": {"city": "Köln", "plan": "solo", "age": 61}},
    )
    (person,) = await reads.people()
    assert person["name"] == "Ada King" and person["attributes"] == {
        "city": "Köln",
        "plan": "solo",
        "age": 61,
    }
    assert await reads.search("lovelace") == [] and await reads.search("king") == ["Ada King"]
    assert await reads.in_city("Bonn") == [] and await reads.in_city("Köln") == ["ada@example.com"]
    assert await reads.segment() == 0

    await mutate(gql, SUBSCRIBE, "subscribeToLists", {"subscriberIds": [ada], "listIds": [second]})
    (person,) = await reads.people()
    assert sorted(s["list"]["name"] for s in person["subscriptions"]) == ["Offers", "Weekly"]
    assert await reads.lists(first, second) == {first: ("Weekly", 1), second: ("Offers", 1)}

    await mutate(gql, UNSUBSCRIBE, "unsubscribeFromLists", {"subscriberIds": [ada], "listIds": [first]})
    (person,) = await reads.people("page")
    assert {s["list"]["name"]: s["status"] for s in person["subscriptions"]} == {
        "Weekly": "UNSUBSCRIBED",
        "Offers": "CONFIRMED",
    }
    assert await reads.lists(first, second) == {first: ("Weekly", 0), second: ("Offers", 1)}

    await mutate(gql, UPDATE_LIST, "updateList", {"id": second, "name": "Deals"})
    (person,) = await reads.people()
    assert sorted(s["list"]["name"] for s in person["subscriptions"]) == ["Deals", "Weekly"]
    assert await reads.lists(second) == {second: ("Deals", 1)}

    await mutate(gql, DELETE, "deleteSubscriber", {"id": ada})
    assert await reads.people() == []
    assert await reads.search("king") == []
    assert await reads.lists(first, second) == {first: ("Weekly", 0), second: ("Deals", 0)}


CREATE_CAMPAIGN = """mutation($input: CreateCampaignInput!) { createCampaign(input: $input) {
  campaign { id } userErrors { code } } }"""
UPDATE_CAMPAIGN = """mutation($input: UpdateCampaignInput!) { updateCampaign(input: $input) {
  campaign { id } userErrors { code } } }"""


async def test_campaign_changes_are_read_at_once(gql: GQL, reads: Reads) -> None:
    first, second = await make_list(gql, "Weekly"), await make_list(gql, "Offers")
    created = await mutate(
        gql,
        CREATE_CAMPAIGN,
        "createCampaign",
        {
            "name": "Spring",
            "subject": "Hello",
            "fromEmail": "news@example.com",
            "body": "<p>Hi</p>",
            "format": "HTML",
            "listIds": [first],
        },
    )
    campaign_id = created["campaign"]["id"]
    before = (await reads.both(CAMPAIGN, {"id": campaign_id}))["campaign"]
    assert before["name"] == "Spring" and [lst["name"] for lst in before["lists"]] == ["Weekly"]
    await reads.both(CAMPAIGNS, {"n": 25})

    await mutate(
        gql,
        UPDATE_CAMPAIGN,
        "updateCampaign",
        {"id": campaign_id, "name": "Summer", "subject": "Hi there", "listIds": [first, second]},
    )
    after = (await reads.both(CAMPAIGN, {"id": campaign_id}))["campaign"]
    assert (after["name"], after["subject"]) == ("Summer", "Hi there")
    assert sorted(lst["name"] for lst in after["lists"]) == ["Offers", "Weekly"]
    (node,) = [e["node"] for e in (await reads.both(CAMPAIGNS, {"n": 25}))["campaigns"]["edges"]]
    assert (node["name"], node["subject"]) == ("Summer", "Hi there")

    await mutate(gql, UPDATE_LIST, "updateList", {"id": second, "name": "Deals"})
    after = (await reads.both(CAMPAIGN, {"id": campaign_id}))["campaign"]
    assert sorted(lst["name"] for lst in after["lists"]) == ["Deals", "Weekly"]


async def test_campaign_stats_show_an_event_once_its_webhook_returned(
    db: Database, settings: Settings, reads: Reads
) -> None:
    seeded = await seed_sent_campaign(db, ["ada@example.com", "bob@example.com"], provider="sendgrid")
    campaign_id = to_global_id("Campaign", seeded.campaign_id)

    async def stats() -> dict[str, Any]:
        node = (await reads.both(CAMPAIGN, {"id": campaign_id}))["campaign"]
        in_page = [
            e["node"]["stats"]
            for e in (await reads.both(CAMPAIGNS, {"n": 25}))["campaigns"]["edges"]
            if e["node"]["id"] == campaign_id
        ]
        assert in_page == [node["stats"]]
        return dict(node["stats"])

    assert (await stats())["opens"] == 0
    app = create_app(
        settings.model_copy(update={"webhook_verify": False}),
        Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for number, (kind, email) in enumerate(
            [("delivered", "ada@example.com"), ("open", "ada@example.com")]
        ):
            event = {
                "email": email,
                "timestamp": 1_767_225_600 + number,
                "event": kind,
                "sg_event_id": f"event-{number}",
                "sg_message_id": f"message-{number}",
                "emailkit_delivery": str(seeded.deliveries[email]),
            }
            resp = await c.post("/webhooks/sendgrid", content=json.dumps([event]).encode())
            assert resp.status_code == 200, resp.text
            seen = await stats()
            assert seen["delivered"] == 1
            assert seen["opens"] == number  # the open is the second event
            assert seen["uniqueOpens"] == number
