"""Relations are fetched through DataLoaders, batched: every relation of a page, the connections one request
holds, reads outside an operation, and nested pages filtered per parent through aliases and fragments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, Delivery, DeliveryStatus
from emailkit.schema.loaders import MAX_CONNECTIONS_PER_REQUEST, Loaders
from tests.support.dataloaders import (
    DELIVERIES_PER_CAMPAIGN,
    page_statements,
    seed,
    seed_deliveries,
)
from tests.support.graphql import GQL, data

EVERY_RELATION = """query($n: Int!) {
  campaigns(first: $n) { edges { node {
    template { name }
    lists { name subscriberCount optinTemplate { name } }
    segments { name }
    progress { sent }
    stats { sent }
    links { url }
    timeline { start }
    deliveries(first: 3) {
      totalCount
      edges { node {
        campaign { name }
        subscriber {
          email
          subscriptions { list { name } }
          events(first: 2) { totalCount edges { node { campaign { name } subscriber { email } } } }
        }
      } }
    }
  } } }
}"""


async def test_every_relation_of_a_campaign_page_is_batched(gql: GQL, db: Database) -> None:
    await seed(db, 50)
    await seed_deliveries(db)
    async with db.transaction() as session:
        people = (await session.execute(select(Subscriber))).scalars().all()
        # The newest campaign, on both pages: a relation already loaded on the page is not read again.
        campaign_id = (await session.execute(select(func.max(Campaign.id)))).scalar_one()
        await session.execute(
            insert(Event),
            [
                {
                    "occurred_at": datetime.now(UTC),
                    "type": EventType.OPEN,
                    "provider": "emailkit",
                    "email": p.email,
                    "campaign_id": campaign_id,
                    "subscriber_id": p.id,
                }
                for p in people
                for _ in range(3)
            ],
        )
    data(await gql("{ viewer { name } }"))

    small, _ = await page_statements(gql, db, EVERY_RELATION, 5)
    large, page = await page_statements(gql, db, EVERY_RELATION, 50)

    nodes = [e["node"] for e in page["campaigns"]["edges"]]
    assert len(nodes) == 50
    delivery = nodes[0]["deliveries"]["edges"][0]["node"]
    assert delivery["campaign"]["name"].startswith("campaign ")
    assert delivery["subscriber"]["events"]["totalCount"] == 3
    assert len(delivery["subscriber"]["events"]["edges"]) == 2
    assert all(n["deliveries"]["totalCount"] == DELIVERIES_PER_CAMPAIGN for n in nodes)
    # One statement per relation, whatever the page size: the page, its templates, segment ids, stats, timelines,
    # links, deliveries and their counts, list ids, campaigns (progress), lists and their counts, subscribers,
    # their subscriptions, events and event counts.
    assert len(large) == len(small), (small, large)
    assert len(large) <= 16, large


async def test_one_request_holds_few_connections_however_wide_it_is(gql: GQL, db: Database) -> None:
    await seed(db, 5)
    data(await gql("{ viewer { name } }"))
    held = peak = 0

    def checkout(*_: Any) -> None:
        nonlocal held, peak
        held += 1
        peak = max(peak, held)

    def checkin(*_: Any) -> None:
        nonlocal held
        held -= 1

    pool = db.engine.sync_engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        # 30 aliases, each a page, its count and its lists' counts: with a session per read, 30 connections at once.
        query = (
            "{ "
            + " ".join(
                f"a{i}: lists(first: 5) {{ totalCount edges {{ node {{ name subscriberCount }} }} }}"
                for i in range(30)
            )
            + " }"
        )
        result = data(await gql(query))
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
    assert all(result[f"a{i}"]["totalCount"] == 6 for i in range(30))
    # Every read of the operation runs in the one session it holds (the API key is looked up before, in its own).
    assert peak == 1, peak


async def test_reads_outside_one_operation_take_a_session_each_within_the_cap(db: Database) -> None:
    """A WebSocket's operations may live for hours: their reads never pin a connection between statements."""
    loaders = Loaders(db)
    held = peak = 0
    gate, full = asyncio.Event(), asyncio.Event()

    async def read() -> int:
        nonlocal held, peak
        async with loaders.session() as session:
            held += 1
            peak = max(peak, held)
            if held == MAX_CONNECTIONS_PER_REQUEST:
                full.set()
            await gate.wait()
            value = int((await session.execute(select(func.count()).select_from(MailingList))).scalar_one())
            held -= 1
            return value

    tasks = [asyncio.create_task(read()) for _ in range(3 * MAX_CONNECTIONS_PER_REQUEST)]
    await full.wait()
    gate.set()
    assert await asyncio.gather(*tasks) == [0] * len(tasks)
    assert peak == MAX_CONNECTIONS_PER_REQUEST


async def test_a_failed_read_does_not_spoil_the_operations_next_reads(db: Database) -> None:
    loaders = Loaders(db, shared=True)
    with pytest.raises(DBAPIError):
        async with loaders.session() as session:
            # Aborts the transaction on PostgreSQL (and fails on SQLite too).
            await session.execute(text("SELECT * FROM no_such_table"))
    async with loaders.session() as session:
        assert (await session.execute(select(func.count()).select_from(MailingList))).scalar_one() == 0
    await loaders.release()
    assert loaders._held is None


# Campaign c0 failed for d0, d2 and d4; campaign c1 for d1 only.
FAILED_FOR = {0: {0, 2, 4}, 1: {1}}


async def test_nested_deliveries_filter_count_and_page_per_campaign(gql: GQL, db: Database) -> None:
    """Two aliases with different arguments share a batch; each campaign gets its own page, count and cursor."""
    async with db.transaction() as session:
        people = [Subscriber(email=f"d{i}@example.com") for i in range(6)]
        campaigns = [Campaign(name=f"c{k}", subject="Hi", from_email="news@example.com") for k in range(2)]
        session.add_all([*people, *campaigns])
        await session.flush()
        await session.execute(
            insert(Delivery),
            [
                {
                    "campaign_id": c.id,
                    "subscriber_id": p.id,
                    "email": p.email,
                    "status": DeliveryStatus.FAILED if i in FAILED_FOR[k] else DeliveryStatus.SENT,
                }
                for k, c in enumerate(campaigns)
                for i, p in enumerate(people)
            ],
        )
    query = """query($after: String) { campaigns(first: 2) { edges { node { name
      all: deliveries(first: 3) { totalCount edges { node { email } } }
      failed: deliveries(first: 2, status: FAILED, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { email status } } }
    } } } }"""
    nodes = {e["node"]["name"]: e["node"] for e in data(await gql(query))["campaigns"]["edges"]}
    assert [d["node"]["email"] for d in nodes["c0"]["all"]["edges"]] == [
        "d0@example.com",
        "d1@example.com",
        "d2@example.com",
    ]
    assert nodes["c0"]["all"]["totalCount"] == nodes["c1"]["all"]["totalCount"] == 6
    c0_failed = nodes["c0"]["failed"]
    assert [d["node"]["email"] for d in c0_failed["edges"]] == ["d0@example.com", "d2@example.com"]
    assert c0_failed["totalCount"] == 3 and c0_failed["pageInfo"]["hasNextPage"] is True
    assert [d["node"]["email"] for d in nodes["c1"]["failed"]["edges"]] == ["d1@example.com"]
    assert (
        nodes["c1"]["failed"]["totalCount"] == 1 and nodes["c1"]["failed"]["pageInfo"]["hasNextPage"] is False
    )

    rest = data(await gql(query, {"after": c0_failed["pageInfo"]["endCursor"]}))["campaigns"]["edges"]
    c0_rest = next(e["node"]["failed"] for e in rest if e["node"]["name"] == "c0")
    assert [d["node"]["email"] for d in c0_rest["edges"]] == ["d4@example.com"]
    assert c0_rest["pageInfo"]["hasNextPage"] is False


SUBSCRIBER_PAGES = {
    "plain": "query($n: Int!) { subscribers(first: $n) { edges { node { email subscriptions { status list { name } } } } } }",
    "fragments": """query($n: Int!) { subscribers(first: $n) { ...Rows } }
        fragment Rows on SubscriberConnection { edges { node { email ... on Subscriber { subs: subscriptions {
          status ...L } } } } }
        fragment L on ListSubscription { list { name } }""",
}


async def test_a_subscriber_page_reads_its_subscriptions_and_lists_ahead_through_fragments_and_aliases(
    gql: GQL, db: Database
) -> None:
    await seed(db, 1)
    data(await gql("{ viewer { name } }"))
    pages = {}
    for name, query in SUBSCRIBER_PAGES.items():
        statements, result = await page_statements(gql, db, query, 50)
        # The page, then its subscriptions and their lists, each once, and nothing per node.
        assert len(statements) == 3, statements
        pages[name] = [
            (
                e["node"]["email"],
                [
                    (s["status"], s["list"]["name"])
                    for s in e["node"].get("subs") or e["node"]["subscriptions"]
                ],
            )
            for e in result["subscribers"]["edges"]
        ]
    assert pages["plain"] == pages["fragments"]
    names = [[name for _, name in subs] for _, subs in pages["plain"]]
    # Subscriber k is on the first 1 + k % 6 lists: four consecutive subscribers, four different prefixes.
    assert all(found == [f"list {k}" for k in range(len(found))] for found in names), names
    assert len({len(found) for found in names}) == 4, names
