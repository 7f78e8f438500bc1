"""Relations are fetched through DataLoaders: a page costs a fixed number of SQL statements, whatever its size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, insert

from emailkit.domain.db import Database
from emailkit.domain.models import (
    Campaign,
    CampaignList,
    ContentFormat,
    MailingList,
    Subscriber,
    Subscription,
    Template,
    TemplateKind,
)
from tests.conftest import GQL, data

PAGE = """query($n: Int!) {
  campaigns(first: $n) { edges { node { name lists { name subscriberCount } template { name } } } }
}"""


@contextmanager
def recorded_statements(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


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
