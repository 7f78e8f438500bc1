"""The reads bench/api.py times cost a fixed number of SQL statements, the same for 5 rows as for 50.

The queries are those of ``reads()`` in bench/api.py (the fields a subscriber table and a campaign dashboard
show); a new relation in them that is not batched shows up here as a count that grows with the page.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.feedback import CampaignLink, CampaignStats
from emailkit.db.tables.sending import Campaign, CampaignList
from emailkit.schema.relay import to_global_id
from tests.support.database import recorded_statements
from tests.support.graphql import GQL, data

SUBSCRIBER_FIELDS = """
  cursor
  node {
    id email name status createdAt attributes
    subscriptions { status list { id name } }
  }
"""
STATS_FIELDS = (
    "recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed"
)


def page_query(arguments: str, *, total: bool = False) -> str:
    return (
        f"query($n: Int!) {{ subscribers(first: $n{arguments}) {{ edges {{ {SUBSCRIBER_FIELDS} }} "
        f"pageInfo {{ hasNextPage endCursor }} {'totalCount' if total else ''} }} }}"
    )


PAGES = {
    "page": page_query(""),
    "page_count": page_query("", total=True),
    "search": page_query(', search: "user"'),
    "search_count": page_query(', search: "user"', total=True),
    "filter": page_query(', filter: {attribute: {path: "city", op: EQ, value: "Bonn"}}'),
}
SEGMENT = """query($plan: JSON!) { segmentPreview(filter: {and: [{attribute: {path: "plan", op: EQ, value: $plan}},
  {attribute: {path: "age", op: GTE, value: 60}}]}) { count sample { id email } userErrors { code } } }"""
CAMPAIGN = f"""query($id: ID!) {{ campaign(id: $id) {{ id name subject status createdAt startedAt finishedAt
  stats {{ {STATS_FIELDS} }} links {{ url clicks uniqueClicks }} lists {{ id name }} }} }}"""
CAMPAIGNS = f"""query($n: Int!) {{ campaigns(first: $n) {{ edges {{ node {{ id name subject status createdAt
  stats {{ {STATS_FIELDS} }} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""

PEOPLE = 120
# segmentPreview's two audiences: plan "team" matches 50 people aged 60+, plan "pro" 5.
AUDIENCES = {"team": 50, "pro": 5}


async def seed(db: Database) -> tuple[int, int]:
    """PEOPLE subscribers on 3 lists with 5 attributes, 60 campaigns with counters; the ids of a campaign with
    5 links on 1 list and of one with 50 links on 3 lists."""
    async with db.transaction() as session:
        lists = [MailingList(name=f"list {i}") for i in range(3)]
        session.add_all(lists)
        await session.flush()

        def plan(i: int) -> str:
            return "team" if i < AUDIENCES["team"] else "pro" if i < sum(AUDIENCES.values()) else "solo"

        people = [
            Subscriber(
                email=f"user{i:03}@example.com",
                name=f"User {i:03}",
                attributes={
                    "city": "Bonn" if i % 2 else "Köln",
                    "plan": plan(i),
                    "age": 60 + i % 20,
                    "signup": "2025-01-01",
                    "language": "de",
                },
            )
            for i in range(PEOPLE)
        ]
        session.add_all(people)
        await session.flush()
        await session.execute(
            insert(Subscription),
            [{"subscriber_id": p.id, "list_id": lst.id} for p in people for lst in lists],
        )
        campaigns = [
            Campaign(name=f"campaign {i}", subject="Hi", from_email="news@example.com", recipients_count=100)
            for i in range(60)
        ]
        session.add_all(campaigns)
        await session.flush()
        await session.execute(
            insert(CampaignStats),
            [{"campaign_id": c.id, "delivered": 90, "opens": 40, "clicks": 10} for c in campaigns],
        )
        small, large = campaigns[0], campaigns[1]
        await session.execute(
            insert(CampaignLink),
            [
                {"campaign_id": c.id, "url_hash": f"{k:032x}", "url": f"https://example.com/{k}", "clicks": k}
                for c, links in ((small, 5), (large, 50))
                for k in range(links)
            ],
        )
        await session.execute(
            insert(CampaignList),
            [{"campaign_id": small.id, "list_id": lists[0].id}]
            + [{"campaign_id": large.id, "list_id": lst.id} for lst in lists],
        )
        return small.id, large.id


async def statements(gql: GQL, db: Database, query: str, variables: dict[str, Any]) -> tuple[list[str], Any]:
    with recorded_statements(db) as recorded:
        result = data(await gql(query, variables))
    # The API key's lookup comes before the operation, the same for every request; not the read's cost.
    return [s for s in recorded if "api_keys" not in s], result


@pytest.fixture
async def seeded(gql: GQL, db: Database) -> tuple[int, int]:
    ids = await seed(db)
    data(await gql("{ viewer { name } }"))  # warm-up: connections opened, the key's last use stamped
    return ids


# The most statements each read may take: its rows, then one batch per relation (subscriptions, their lists),
# and a count when totalCount is asked.
PAGE_BOUNDS = {"page": 3, "page_count": 4, "search": 3, "search_count": 4, "filter": 3}


@pytest.mark.parametrize("read", sorted(PAGES))
async def test_subscriber_pages_cost_the_same_statements_for_5_and_50(
    gql: GQL, db: Database, seeded: tuple[int, int], read: str
) -> None:
    small, small_page = await statements(gql, db, PAGES[read], {"n": 5})
    large, large_page = await statements(gql, db, PAGES[read], {"n": 50})

    rows = large_page["subscribers"]["edges"]
    assert len(small_page["subscribers"]["edges"]) == 5 and len(rows) == 50
    assert all(len(e["node"]["subscriptions"]) == 3 for e in rows)
    assert all(e["node"]["attributes"]["language"] == "de" for e in rows)
    if read == "filter":
        assert all(e["node"]["attributes"]["city"] == "Bonn" for e in rows)
    if read.endswith("_count"):
        assert large_page["subscribers"]["totalCount"] == PEOPLE
    assert len(large) == len(small), (small, large)
    assert len(large) <= PAGE_BOUNDS[read], large


async def test_segment_preview_costs_the_same_statements_for_5_and_50_matches(
    gql: GQL, db: Database, seeded: tuple[int, int]
) -> None:
    few, few_result = await statements(gql, db, SEGMENT, {"plan": "pro"})
    many, many_result = await statements(gql, db, SEGMENT, {"plan": "team"})

    assert few_result["segmentPreview"]["count"] == AUDIENCES["pro"]
    assert many_result["segmentPreview"]["count"] == AUDIENCES["team"]
    assert many_result["segmentPreview"]["sample"] and not many_result["segmentPreview"]["userErrors"]
    # The count and the sample.
    assert len(many) == len(few) <= 2, (few, many)


async def test_a_campaign_with_stats_links_and_lists_costs_the_same_statements_for_5_and_50_links(
    gql: GQL, db: Database, seeded: tuple[int, int]
) -> None:
    small_id, large_id = seeded
    small, small_result = await statements(gql, db, CAMPAIGN, {"id": to_global_id("Campaign", small_id)})
    large, large_result = await statements(gql, db, CAMPAIGN, {"id": to_global_id("Campaign", large_id)})

    assert len(small_result["campaign"]["links"]) == 5 and len(small_result["campaign"]["lists"]) == 1
    campaign = large_result["campaign"]
    assert len(campaign["links"]) == 50 and len(campaign["lists"]) == 3
    assert campaign["stats"]["delivered"] == 90 and campaign["stats"]["recipients"] == 100
    # The campaign, its stats, its links, its list ids, the lists.
    assert len(large) == len(small) <= 5, (small, large)


async def test_a_page_of_campaigns_with_stats_costs_the_same_statements_for_5_and_50(
    gql: GQL, db: Database, seeded: tuple[int, int]
) -> None:
    small, small_page = await statements(gql, db, CAMPAIGNS, {"n": 5})
    large, large_page = await statements(gql, db, CAMPAIGNS, {"n": 50})

    nodes = [e["node"] for e in large_page["campaigns"]["edges"]]
    assert len(small_page["campaigns"]["edges"]) == 5 and len(nodes) == 50
    assert all(n["stats"]["opens"] == 40 for n in nodes)
    # The page and its stats.
    assert len(large) == len(small) <= 2, (small, large)
