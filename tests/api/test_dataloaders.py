"""Relations are fetched through DataLoaders: a page costs a fixed number of SQL statements, whatever its size."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.feedback import Event
from emailkit.schema.relay import to_global_id
from tests.support.database import recorded_statements
from tests.support.dataloaders import (
    DELIVERIES_PER_CAMPAIGN,
    EVENTS_PER_SUBSCRIBER,
    PAGE,
    SUBSCRIBER_PAGE,
    page_statements,
    seed,
    seed_deliveries,
    seed_subscriber_events,
)
from tests.support.graphql import GQL, data


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
