"""Query cost: an operation over the budget is refused before any resolver runs; every answer reports its cost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.pubsub import InProcessPubSub
from tests.support.database import recorded_statements
from tests.support.dataloaders import seed, seed_subscriber_events
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.feedback import seed_sent_campaign
from tests.support.graphql import GQL, data
from tests.support.live_server import live_server

DEFAULT_LIMIT = 20_000

ATTACK = """{ campaigns(first: 250) { edges { node {
  deliveries(first: 250) { edges { node { campaign {
    deliveries(first: 250) { edges { node { id } } }
  } } } }
} } } }"""
# 2 + 250 x (1 + 2 + 250 x (1 + 1 + 2 + 250 x (1 + 1))): three nested pages of 250.
ATTACK_COST = 31_500_752

DASHBOARD = """query Dashboard {
  campaigns(first: 50) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id name status
      stats { sent delivered openRate clickRate }
      lists { id name subscriberCount }
    } }
  }
  subscribers(first: 50) {
    totalCount
    edges { node { id email name status subscriptions { status list { name } } } }
  }
}"""
# campaigns: 2 + 50 x (totalCount 1 + pageInfo 3 + cursor 1 + node (1 + 3 + stats 5 + lists 10 x 4)) = 2702
# subscribers: 2 + 50 x (totalCount 1 + node (1 + 4 + subscriptions 10 x (1 + 1 + list 2))) = 2302
DASHBOARD_COST = 5004


def cost_of(body: dict[str, Any]) -> dict[str, int]:
    cost: dict[str, int] = body["extensions"]["cost"]
    return cost


def refused_for_cost(body: dict[str, Any], requested: int, limit: int) -> None:
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert f"{requested}" in error["message"] and f"{limit}" in error["message"], error["message"]
    assert cost_of(body) == {"requested": requested, "limit": limit}


async def test_the_nested_deliveries_attack_is_refused_before_any_resolver_runs(
    gql: GQL, db: Database
) -> None:
    await seed(db, 3)
    viewer = await make_key(db, Role.VIEWER, "viewer")
    data(await gql("{ viewer { name } }", key=viewer))
    with recorded_statements(db) as statements:
        body = await gql(ATTACK, key=viewer)
    refused_for_cost(body, ATTACK_COST, DEFAULT_LIMIT)
    # Authentication reads the key; nothing else touched the database.
    assert [s for s in statements if "api_keys" not in s] == []


async def test_the_aliased_nested_counts_attack_is_refused(gql: GQL, db: Database) -> None:
    viewer = await make_key(db, Role.VIEWER, "viewer")
    query = (
        "{ "
        + " ".join(
            f"a{i}: subscribers(first: 250) {{ edges {{ node {{ events(first: 250) {{ totalCount }} }} }} }}"
            for i in range(30)
        )
        + " }"
    )
    # Each alias: 2 + 250 x (node 1 + events (2 + 250 x totalCount 1)).
    refused_for_cost(await gql(query, key=viewer), 30 * (2 + 250 * (1 + 2 + 250)), DEFAULT_LIMIT)


async def test_a_dashboard_page_passes_and_reports_its_cost(gql: GQL, db: Database) -> None:
    await seed(db, 60)
    await seed_subscriber_events(db, 60)
    body = await gql(DASHBOARD)
    result = data(body)
    assert len(result["campaigns"]["edges"]) == 50
    assert len(result["subscribers"]["edges"]) == 50
    # seed() made 4 subscribers on one list or more; seed_subscriber_events() the rest, on 2 lists each.
    counts = [len(e["node"]["subscriptions"]) for e in result["subscribers"]["edges"]]
    assert min(counts[:4]) >= 1 and counts[4:] == [2] * 46
    assert cost_of(body) == {"requested": DASHBOARD_COST, "limit": DEFAULT_LIMIT}


async def test_variables_give_first_its_value_and_defaults_count_when_absent(gql: GQL) -> None:
    query = """query($n: Int!, $m: Int! = 10) {
      campaigns(first: $n) { edges { node { deliveries(first: $m) { edges { node { email } } } } } }
    }"""
    # 2 + n x (node 1 + deliveries (2 + m x (node 1 + email 1)))
    assert cost_of(await gql(query, {"n": 10})) == {"requested": 2 + 10 * 23, "limit": DEFAULT_LIMIT}
    assert cost_of(await gql(query, {"n": 10, "m": 3}))["requested"] == 2 + 10 * 9
    refused_for_cost(await gql(query, {"n": 250, "m": 250}), 2 + 250 * 503, DEFAULT_LIMIT)
    # No `first`: the field's default (50) counts.
    assert cost_of(await gql("{ campaigns { edges { node { name } } } }"))["requested"] == 2 + 50 * 2


async def test_fragments_inline_fragments_and_aliases_are_counted(gql: GQL, db: Database) -> None:
    written_out = "{ campaigns(first: 10) { edges { node { name lists { name } } } } }"
    with_fragments = """
      query { campaigns(first: 10) { ...Page } }
      fragment Page on CampaignConnection { edges { node { ... on Campaign { name } ...Lists } } }
      fragment Lists on Campaign { lists { name } }
    """
    single = cost_of(await gql(written_out))["requested"]
    assert single == 2 + 10 * (1 + 1 + 10 * 2)
    assert cost_of(await gql(with_fragments))["requested"] == single

    aliased = "{ a: campaigns(first: 10) { ...P } b: campaigns(first: 10) { ...P } }" + (
        " fragment P on CampaignConnection { edges { node { name lists { name } } } }"
    )
    assert cost_of(await gql(aliased))["requested"] == 2 * single

    # A fragment on an interface's type counts that type's fields.
    await seed(db, 1)
    campaign_id = data(await gql("{ campaigns(first: 1) { edges { node { id } } } }"))["campaigns"]["edges"][
        0
    ]["node"]["id"]
    on_node = """query($id: ID!) { node(id: $id) { id ... on Campaign { deliveries(first: 5) {
      edges { node { email } } } } } }"""
    body = await gql(on_node, {"id": campaign_id})
    assert data(body)["node"]["deliveries"]["edges"] == []
    assert cost_of(body)["requested"] == 1 + 1 + 2 + 5 * 2

    skipped = """query($s: Boolean!) { viewer { name } campaigns(first: 200) @skip(if: $s) {
      edges { node { lists { name } } } } }"""
    assert cost_of(await gql(skipped, {"s": True}))["requested"] == 2
    assert cost_of(await gql(skipped, {"s": False}))["requested"] == 2 + 2 + 200 * (1 + 10 * 2)


async def test_mutations_report_their_cost(gql: GQL) -> None:
    body = await gql(
        'mutation { createList(input: {name: "news"}) { list { name } userErrors { field message code } } }'
    )
    assert data(body)["createList"]["list"]["name"] == "news"
    # payload 1 + list (1 + 1) + userErrors 10 x (1 + 3)
    assert cost_of(body)["requested"] == 1 + 2 + 40


@pytest.fixture
async def small_budget(runtime: Runtime, admin_key: str) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    settings = Settings(  # type: ignore[arg-type]
        database_url=runtime.db.url,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        query_cost_limit=100,
    )
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:

        async def run(query: str) -> Any:
            resp = await c.post(
                "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {admin_key}"}
            )
            assert resp.status_code == 200, resp.text
            return resp.json()

        yield run


async def test_the_budget_is_a_setting(small_budget: Callable[[str], Awaitable[Any]]) -> None:
    at_limit = await small_budget("{ campaigns(first: 49) { edges { node { name } } } }")
    assert at_limit["data"] == {"campaigns": {"edges": []}}
    assert cost_of(at_limit) == {"requested": 100, "limit": 100}
    refused_for_cost(await small_budget("{ campaigns(first: 50) { edges { node { name } } } }"), 102, 100)


async def test_subscriptions_are_costed_when_they_subscribe(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    key = await make_key(db, Role.VIEWER, "live")
    settings = Settings(  # type: ignore[arg-type]
        database_url=db.url, secret_key=TEST_SECRET, public_url="http://127.0.0.1", query_cost_limit=10
    )
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url, pubsub=InProcessPubSub())
    campaign = to_global_id("Campaign", seeded.campaign_id)
    expensive = f"""subscription {{ campaignStats(id: "{campaign}") {{
      recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed
      openRate clickRate bounceRate complaintRate campaignId }} }}"""
    cheap = f'subscription {{ campaignStats(id: "{campaign}") {{ sent }} }}'
    async with (
        live_server(create_app(settings, runtime)) as address,
        connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
    ):
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": expensive}}))
        async with asyncio.timeout(10):
            refused = json.loads(await ws.recv())
        assert refused["id"] == "1", refused
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_COMPLEX"], refused
        assert "16" in errors[0]["message"] and "10" in errors[0]["message"]

        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": cheap}}))
        async with asyncio.timeout(10):
            while (message := json.loads(await ws.recv()))["id"] != "2":
                pass
        assert message["type"] == "next", message
        assert message["payload"]["data"]["campaignStats"]["sent"] == 1
        assert message["payload"]["extensions"]["cost"] == {"requested": 2, "limit": 10}


async def test_segment_audience_counts_cost_what_they_scan(gql: GQL) -> None:
    # Each count is a query over the whole audience: 100 points, so a page of 250 of them is refused.
    query = "{ segments(first: 250) { edges { node { subscriberCount } } } }"
    refused_for_cost(await gql(query), 2 + 250 * (1 + 100), DEFAULT_LIMIT)
    page = await gql("{ segments(first: 50) { edges { node { name subscriberCount } } } }")
    assert data(page) == {"segments": {"edges": []}}
    assert cost_of(page)["requested"] == 2 + 50 * (1 + 1 + 100)


async def test_a_fragment_bomb_is_refused_before_validation_expands_it(gql: GQL) -> None:
    # Each fragment spreads the next 10 times: 10^5 selections written out, under 300 tokens as sent. The depth
    # and alias checks expand fragments one by one: this held the event loop for a second, 10^7 for 90 s.
    depth, width = 5, 10
    fragments = " ".join(
        f"fragment F{i} on Query {{ {' '.join([f'...F{i + 1}'] * width)} }}" for i in range(depth)
    )
    query = f"query {{ ...F0 }} {fragments} fragment F{depth} on Query {{ __typename }}"
    started = time.monotonic()
    body = await gql(query)
    assert time.monotonic() - started < 5
    assert body.get("data") is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert "selections" in error["message"] and "10000" in error["message"], error["message"]
