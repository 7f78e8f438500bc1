"""Rows and queries for the DataLoader tests: campaigns on lists with templates, deliveries, subscribers with
events, and the statements a page runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignList, Delivery, DeliveryStatus
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


DELIVERIES_PER_CAMPAIGN = 12
EVENTS_PER_SUBSCRIBER = 12

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
