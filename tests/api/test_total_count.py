"""totalCount is exact up to the exact-count limit; beyond it PostgreSQL answers the planner's estimate and SQLite
the limit as a lower bound, and totalCountPrecision says which. A limit of 3 stands in for the 10,000 default."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, text

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign, Delivery, DeliveryStatus
from emailkit.domain.runtime import Runtime
from tests.support.database import recorded_statements
from tests.support.graphql import GQL, data

LIMIT = 3

PAGE = """query($search: String) {
  subscribers(first: 2, search: $search) { totalCount totalCountPrecision edges { node { email } } }
}"""

DELIVERIES = """{ campaigns(first: 5) { edges { node { name
  all: deliveries(first: 1) { totalCount totalCountPrecision }
  failed: deliveries(first: 1, status: FAILED) { totalCount totalCountPrecision }
} } } }"""


@pytest.fixture(autouse=True)
def small_limit(runtime: Runtime) -> None:
    runtime.exact_count_limit = LIMIT


async def add_subscribers(db: Database, n: int, start: int = 0) -> None:
    async with db.transaction() as session:
        await session.execute(
            insert(Subscriber),
            [{"email": f"user{i}@example.com", "name": f"User {i}"} for i in range(start, start + n)],
        )


async def analyze(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("ANALYZE subscribers"))


async def count(gql: GQL, search: str | None = None) -> tuple[int, str]:
    result = data(await gql(PAGE, {"search": search}))["subscribers"]
    return result["totalCount"], result["totalCountPrecision"]


async def test_exact_up_to_the_limit(gql: GQL, db: Database) -> None:
    assert await count(gql) == (0, "EXACT")
    await add_subscribers(db, LIMIT)
    assert await count(gql) == (LIMIT, "EXACT")
    assert await count(gql, "user1") == (1, "EXACT")


async def test_beyond_the_limit_an_estimate_on_postgresql_at_least_the_limit_on_sqlite(
    gql: GQL, db: Database
) -> None:
    await add_subscribers(db, 8)
    if db.dialect == "postgresql":
        await analyze(db)
        # Fresh statistics: the unfiltered estimate is the live row count.
        assert await count(gql) == (8, "ESTIMATE")
    else:
        assert await count(gql) == (LIMIT, "AT_LEAST")
    # A filter that narrows below the limit is counted exactly again.
    assert await count(gql, "user7") == (1, "EXACT")


@pytest.mark.postgresql_only
async def test_an_estimate_at_or_below_the_limit_is_not_shown(gql: GQL, db: Database) -> None:
    await add_subscribers(db, 2)
    await analyze(db)
    # Statistics say 2 rows; there are 5, more than the limit, so the honest answer is "at least 3".
    await add_subscribers(db, 3, start=2)
    assert await count(gql) == (LIMIT, "AT_LEAST")


async def test_both_fields_share_one_count_statement(gql: GQL, db: Database) -> None:
    await add_subscribers(db, 2)
    data(await gql("{ viewer { name } }"))
    with recorded_statements(db) as statements:
        assert await count(gql) == (2, "EXACT")
    reads = [s for s in statements if "api_keys" not in s]
    # The page, and one count that reads at most LIMIT + 1 rows.
    assert len(reads) == 2, reads
    assert "count(*)" in reads[1] and "LIMIT" in reads[1]

    await add_subscribers(db, 5, start=2)
    with recorded_statements(db) as statements:
        await count(gql)
    reads = [s for s in statements if "api_keys" not in s]
    # Past the limit PostgreSQL asks the planner once more; SQLite has nothing to ask.
    assert len(reads) == (3 if db.dialect == "postgresql" else 2), reads


async def seed_deliveries(db: Database, per_campaign: dict[str, tuple[int, int]]) -> None:
    """Campaigns by name with (sent, failed) deliveries each."""
    async with db.transaction() as session:
        people = [Subscriber(email=f"r{i}@example.com") for i in range(10)]
        session.add_all(people)
        await session.flush()
        rows: list[dict[str, Any]] = []
        for name, (sent, failed) in per_campaign.items():
            campaign = Campaign(name=name, subject="Hi", from_email="news@example.com")
            session.add(campaign)
            await session.flush()
            statuses = [DeliveryStatus.SENT] * sent + [DeliveryStatus.FAILED] * failed
            rows += [
                {"campaign_id": campaign.id, "subscriber_id": p.id, "email": p.email, "status": status}
                for p, status in zip(people, statuses, strict=False)
            ]
        await session.execute(insert(Delivery), rows)


async def test_nested_connections_count_each_parent_up_to_the_limit(gql: GQL, db: Database) -> None:
    await seed_deliveries(db, {"big": (4, 2), "small": (2, 0), "none": (0, 0)})
    nodes = {e["node"]["name"]: e["node"] for e in data(await gql(DELIVERIES))["campaigns"]["edges"]}
    counts = {
        name: {k: (node[k]["totalCount"], node[k]["totalCountPrecision"]) for k in ("all", "failed")}
        for name, node in nodes.items()
    }
    # Per parent, no estimate: "at least" past the limit on every database.
    assert counts == {
        "big": {"all": (LIMIT, "AT_LEAST"), "failed": (2, "EXACT")},
        "small": {"all": (2, "EXACT"), "failed": (0, "EXACT")},
        "none": {"all": (0, "EXACT"), "failed": (0, "EXACT")},
    }
