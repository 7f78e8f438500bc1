"""Relations are fetched through DataLoaders: a page costs a fixed number of SQL statements, whatever its size."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignList, Delivery, DeliveryStatus
from emailkit.schema.loaders import MAX_CONNECTIONS_PER_REQUEST, Loaders
from emailkit.schema.relay import to_global_id
from tests.support.database import recorded_statements
from tests.support.graphql import GQL, data

PAGE = """query($n: Int!) {
  campaigns(first: $n) { edges { node { name lists { name subscriberCount } template { name } } } }
}"""


async def seed(db: Database, campaigns: int) -> None:
    """`campaigns` campaigns, each sent to 3 of 6 lists and using one of 2 templates; lists have subscribers."""
    async with db.transaction() as session:
        lists = [MailingList(name=f"list {i}") for i in range(6)]
        templates = [
            Template(name=f"tpl {i}", kind=TemplateKind.CAMPAIGN, format=ContentFormat.HTML, body="<p>hi</p>")
            for i in range(2)
        ]
        subscribers = [Subscriber(email=f"s{i}@example.com") for i in range(4)]
        session.add_all([*lists, *templates, *subscribers])
        await session.flush()
        await session.execute(
            insert(Subscription),
            [
                {"subscriber_id": s.id, "list_id": lst.id}
                for s in subscribers
                for lst in lists[: 1 + s.id % 6]
            ],
        )
        rows = [
            Campaign(
                name=f"campaign {i}",
                subject="Hello",
                from_email="news@example.com",
                template_id=templates[i % 2].id,
            )
            for i in range(campaigns)
        ]
        session.add_all(rows)
        await session.flush()
        await session.execute(
            insert(CampaignList),
            [{"campaign_id": c.id, "list_id": lists[(c.id + k) % 6].id} for c in rows for k in range(3)],
        )


async def count_page_statements(gql: GQL, db: Database, n: int) -> tuple[list[str], list[dict[str, Any]]]:
    with recorded_statements(db) as statements:
        edges = data(await gql(PAGE, {"n": n}))["campaigns"]["edges"]
    # Authentication reads the API key once per request, before the operation runs; that is not the page's cost.
    return [s for s in statements if "api_keys" not in s], edges


async def test_campaign_page_with_lists_and_templates_costs_constant_statements(
    gql: GQL, db: Database
) -> None:
    await seed(db, 50)
    # Warm-up: the first request opens connections and stamps the key's last use.
    data(await gql("{ viewer { name } }"))

    small, small_edges = await count_page_statements(gql, db, 10)
    large, large_edges = await count_page_statements(gql, db, 50)

    assert len(small_edges) == 10
    assert len(large_edges) == 50
    node = large_edges[0]["node"]
    assert node["name"] == "campaign 49"
    assert len(node["lists"]) == 3
    assert node["template"]["name"] in {"tpl 0", "tpl 1"}
    assert all(len(e["node"]["lists"]) == 3 for e in large_edges)
    assert sum(lst["subscriberCount"] for e in large_edges for lst in e["node"]["lists"]) > 0

    # One statement each: the page, the campaigns' list ids, the lists, their counts, the templates.
    assert len(large) <= 8, large
    assert len(large) == len(small), (small, large)


DELIVERIES_PER_CAMPAIGN = 12
EVENTS_PER_SUBSCRIBER = 12

CAMPAIGN_DASHBOARD = """query($n: Int!) {
  campaigns(first: $n) { edges { node {
    name
    lists { name }
    stats { sent openRate }
    deliveries(first: 10) {
      totalCount
      pageInfo { hasNextPage }
      edges { node { email status subscriber { email } } }
    }
  } } }
}"""

SUBSCRIBER_PAGE = """query($n: Int!) {
  subscribers(first: $n) { edges { node {
    email
    subscriptions { status list { name } }
    events(first: 10) {
      totalCount
      pageInfo { hasNextPage }
      edges { node { type subscriber { email } campaign { name } } }
    }
  } } }
}"""


async def seed_deliveries(db: Database) -> None:
    """Every campaign is delivered to the same DELIVERIES_PER_CAMPAIGN subscribers."""
    async with db.transaction() as session:
        people = [Subscriber(email=f"r{i}@example.com") for i in range(DELIVERIES_PER_CAMPAIGN)]
        session.add_all(people)
        await session.flush()
        campaign_ids = (await session.execute(select(Campaign.id))).scalars().all()
        await session.execute(
            insert(Delivery),
            [
                {"campaign_id": c, "subscriber_id": p.id, "email": p.email, "status": DeliveryStatus.SENT}
                for c in campaign_ids
                for p in people
            ],
        )


async def seed_subscriber_events(db: Database, subscribers: int) -> None:
    """`subscribers` subscribers on two lists each, with EVENTS_PER_SUBSCRIBER events each from one campaign."""
    async with db.transaction() as session:
        lists = [MailingList(name=f"list {i}") for i in range(3)]
        people = [Subscriber(email=f"p{i:03}@example.com") for i in range(subscribers)]
        campaign = Campaign(name="the campaign", subject="Hi", from_email="news@example.com")
        session.add_all([*lists, *people, campaign])
        await session.flush()
        await session.execute(
            insert(Subscription),
            [
                {"subscriber_id": p.id, "list_id": lists[(i + k) % 3].id}
                for i, p in enumerate(people)
                for k in (0, 1)
            ],
        )
        now = datetime.now(UTC)
        await session.execute(
            insert(Event),
            [
                {
                    "occurred_at": now,
                    "type": EventType.OPEN if k % 2 else EventType.CLICK,
                    "provider": "emailkit",
                    "email": p.email,
                    "campaign_id": campaign.id,
                    "subscriber_id": p.id,
                }
                for p in people
                for k in range(EVENTS_PER_SUBSCRIBER)
            ],
        )


async def page_statements(gql: GQL, db: Database, query: str, n: int) -> tuple[list[str], dict[str, Any]]:
    with recorded_statements(db) as statements:
        result = data(await gql(query, {"n": n}))
    return [s for s in statements if "api_keys" not in s], result


async def test_campaign_page_with_lists_stats_and_deliveries_costs_constant_statements(
    gql: GQL, db: Database
) -> None:
    await seed(db, 50)
    await seed_deliveries(db)
    data(await gql("{ viewer { name } }"))

    small, small_page = await page_statements(gql, db, CAMPAIGN_DASHBOARD, 5)
    large, large_page = await page_statements(gql, db, CAMPAIGN_DASHBOARD, 50)

    campaigns = [e["node"] for e in large_page["campaigns"]["edges"]]
    assert len(small_page["campaigns"]["edges"]) == 5 and len(campaigns) == 50
    for node in campaigns:
        deliveries = node["deliveries"]
        assert deliveries["totalCount"] == DELIVERIES_PER_CAMPAIGN
        assert deliveries["pageInfo"]["hasNextPage"] is True
        emails = [d["node"]["email"] for d in deliveries["edges"]]
        # Ledger order: the first ten recipients of this campaign, each with its own subscriber.
        assert emails == [f"r{i}@example.com" for i in range(10)]
        assert [d["node"]["subscriber"]["email"] for d in deliveries["edges"]] == emails
        assert len(node["lists"]) == 3 and node["stats"]["sent"] == 0

    # The page, the campaigns' list ids, the lists, the stats, the deliveries, their count, the subscribers.
    assert len(large) <= 7, large
    assert len(large) == len(small), (small, large)


async def test_subscriber_page_with_subscriptions_and_events_costs_constant_statements(
    gql: GQL, db: Database
) -> None:
    await seed_subscriber_events(db, 60)
    data(await gql("{ viewer { name } }"))

    small, small_page = await page_statements(gql, db, SUBSCRIBER_PAGE, 5)
    large, large_page = await page_statements(gql, db, SUBSCRIBER_PAGE, 50)

    people = [e["node"] for e in large_page["subscribers"]["edges"]]
    assert len(small_page["subscribers"]["edges"]) == 5 and len(people) == 50
    for person in people:
        assert len(person["subscriptions"]) == 2
        assert all(s["list"]["name"].startswith("list ") for s in person["subscriptions"])
        events = person["events"]
        assert events["totalCount"] == EVENTS_PER_SUBSCRIBER
        assert events["pageInfo"]["hasNextPage"] is True
        assert len(events["edges"]) == 10
        # Each subscriber's own events, none of another's.
        assert {e["node"]["subscriber"]["email"] for e in events["edges"]} == {person["email"]}
        assert {e["node"]["campaign"]["name"] for e in events["edges"]} == {"the campaign"}

    # The page, the subscriptions, their lists, the events, their count, the events' subscribers, the campaign.
    assert len(large) <= 7, large
    assert len(large) == len(small), (small, large)


async def test_nested_events_page_per_subscriber_newest_first_with_cursor(gql: GQL, db: Database) -> None:
    await seed_subscriber_events(db, 3)
    query = """query($after: String) { subscribers(first: 3) { edges { node { email
      events(first: 5, after: $after) { pageInfo { hasNextPage endCursor } edges { node { id } } } } } } }"""
    first_pages = [e["node"] for e in data(await gql(query))["subscribers"]["edges"]]
    async with db.session() as session:
        ids = {
            email: [
                to_global_id("Event", pk)
                for pk in (
                    await session.execute(
                        select(Event.id).where(Event.email == email).order_by(Event.id.desc())
                    )
                ).scalars()
            ]
            for email in (p["email"] for p in first_pages)
        }
    for person in first_pages:
        assert [e["node"]["id"] for e in person["events"]["edges"]] == ids[person["email"]][:5]
    # The next page of the first subscriber, through its cursor.
    cursor = first_pages[0]["events"]["pageInfo"]["endCursor"]
    again = data(await gql(query, {"after": cursor}))["subscribers"]["edges"][0]["node"]
    assert [e["node"]["id"] for e in again["events"]["edges"]] == ids[first_pages[0]["email"]][5:10]
    assert again["events"]["pageInfo"]["hasNextPage"] is True


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
