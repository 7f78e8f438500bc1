"""Two campaigns started at the same time through two SMTP senders, sent by real `emailkit worker` processes on
PostgreSQL with Redis (as in production): each campaign's mail arrives at its own SMTP server only, exactly
once, and the default sender's server gets nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import insert, select

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus
from emailkit.schema.relay import to_global_id
from tests.integration.test_crash_safety import Stack, open_stack, ready, wait_for_status
from tests.support.environment import PG_URL, REDIS_URL
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink

pytestmark = [pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

BODY = '<p>Hello {{ subscriber.name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
CREATE_SENDER = """mutation($i: CreateSenderInput!) {
  createSender(input: $i) { sender { id } userErrors { field code message } } }"""
UPDATE_CAMPAIGN = """mutation($i: UpdateCampaignInput!) {
  updateCampaign(input: $i) { campaign { senderId } userErrors { field code message } } }"""
UPDATE_LIST = """mutation($i: UpdateListInput!) {
  updateList(input: $i) { list { senderId } userErrors { field code message } } }"""


@pytest.fixture
def brand_sinks() -> Iterator[tuple[CountingSink, CountingSink]]:
    a, b = CountingSink(), CountingSink()
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
async def stack(
    db: Database, redis_server: RedisServer, sink: CountingSink, tmp_path
) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    async with open_stack(Stack, db, redis_server, sink, tmp_path) as opened:
        yield opened


async def seed(db: Database, prefix: str, n: int) -> tuple[int, int, list[str]]:
    """A list of n confirmed subscribers and a draft campaign to it: (campaign id, list id, addresses)."""
    emails = [f"{prefix}{i:05d}@senders.test" for i in range(n)]
    async with db.transaction() as s:
        lst = MailingList(name=f"{prefix} readers", optin=OptIn.SINGLE)
        campaign = Campaign(
            name=f"{prefix} news",
            subject="News for {{ subscriber.name }}",
            from_email=f"news@{prefix}.test",
            body=BODY,
            format=ContentFormat.HTML,
        )
        s.add_all([lst, campaign])
        await s.flush()
        rows = [{"email": e, "name": e[:6], "attributes": {}} for e in emails]
        ids = (await s.execute(insert(Subscriber).returning(Subscriber.id), rows)).scalars().all()
        await s.execute(
            insert(Subscription),
            [{"subscriber_id": i, "list_id": lst.id, "status": SubscriptionStatus.CONFIRMED} for i in ids],
        )
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id, lst.id, emails


async def _two_campaigns_through_two_senders(
    stack: Stack, brand_sinks: tuple[CountingSink, CountingSink]
) -> None:
    sink_a, sink_b = brand_sinks
    booting = stack.spawn_workers(2)
    senders = []
    for name, sink in (("Brand A", sink_a), ("Brand B", sink_b)):
        made = (
            await stack.gql(
                CREATE_SENDER,
                i={
                    "name": name,
                    "type": "SMTP",
                    "settings": {"url": sink.url},
                    "poolSize": 3,
                    "ratePerSecond": 5000,
                },
            )
        )["createSender"]
        assert made["userErrors"] == [], made
        senders.append(made["sender"]["id"])
    first, _, first_emails = await seed(stack.db, "alpha", 1500)
    second, second_list, second_emails = await seed(stack.db, "beta", 1500)
    # The first names its sender; the second gets it from its list.
    out = await stack.gql(UPDATE_CAMPAIGN, i={"id": to_global_id("Campaign", first), "senderId": senders[0]})
    assert out["updateCampaign"]["userErrors"] == []
    out = await stack.gql(
        UPDATE_LIST, i={"id": to_global_id("MailingList", second_list), "senderId": senders[1]}
    )
    assert out["updateList"]["userErrors"] == []
    workers = await ready(booting)

    await asyncio.gather(stack.start_campaign(first), stack.start_campaign(second))
    for campaign_id in (first, second):
        row = await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 120, workers)
        assert row.status_reason is None

    assert sink_a.accepted() == Counter(first_emails)
    assert sink_b.accepted() == Counter(second_emails)
    assert stack.sink.accepted_total == 0, "the default sender's server got mail"
    async with stack.db.session() as s:
        rows = await s.execute(
            select(Delivery.campaign_id, Delivery.sender_id, Delivery.status, Delivery.provider).distinct()
        )
        seen = {tuple(r) for r in rows.all()}
    a_pk, b_pk = (globalid.pk_of(g, "Sender") for g in senders)
    assert seen == {
        (first, a_pk, DeliveryStatus.SENT, "smtp"),
        (second, b_pk, DeliveryStatus.SENT, "smtp"),
    }


if PG_URL and REDIS_URL:
    # Collected only with PostgreSQL and Redis wanted, as in CI (never skipped).
    test_two_campaigns_through_two_senders = _two_campaigns_through_two_senders
