"""An unsubscribe leaves every list through which its delivery reached the person, whatever the campaign
targeted: lists, a segment, or both. Campaigns are really sent (pipeline + outbox) and the next campaign with
the same target must skip the person. SQLite always, PostgreSQL when configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Segment,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import EventType
from emailkit.db.tables.sending import (
    Campaign,
    CampaignList,
    CampaignSegment,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.feedback import record_events
from emailkit.domain.feedback.hits import unsubscribe_delivery
from emailkit.domain.ports.webhooks import META_DELIVERY, NormalizedEvent
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import CountingProvider

BODY = '<p>Hi {{ subscriber.name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
C, U, X = SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNCONFIRMED, SubscriptionStatus.UNSUBSCRIBED
BERLIN = {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}


@dataclass
class World:
    db: Database
    outbox: Path
    lists: dict[str, int] = field(default_factory=dict)
    people: dict[str, int] = field(default_factory=dict)

    async def add_lists(self, *names: str, double: Sequence[str] = ()) -> None:
        async with self.db.transaction() as s:
            rows = {
                n: MailingList(name=n, optin=OptIn.DOUBLE if n in double else OptIn.SINGLE) for n in names
            }
            s.add_all(rows.values())
            await s.flush()
            self.lists.update({n: row.id for n, row in rows.items()})

    async def add_person(self, name: str, city: str, subscriptions: dict[str, SubscriptionStatus]) -> None:
        async with self.db.transaction() as s:
            sub = Subscriber(email=f"{name}@example.com", name=name.title(), attributes={"city": city})
            s.add(sub)
            await s.flush()
            self.people[name] = sub.id
            s.add_all(
                Subscription(subscriber_id=sub.id, list_id=self.lists[lst], status=status)
                for lst, status in subscriptions.items()
            )

    async def subscribe(self, name: str, lst: str) -> None:
        async with self.db.transaction() as s:
            s.add(Subscription(subscriber_id=self.people[name], list_id=self.lists[lst], status=C))

    async def send(self, lists: Sequence[str] = (), segment: dict[str, Any] | None = None) -> Sent:
        """Create a campaign to these lists and segment, start it and run every batch."""
        async with self.db.transaction() as s:
            campaign = Campaign(
                name="News",
                subject="News",
                from_email="news@example.com",
                body=BODY,
                format=ContentFormat.HTML,
            )
            s.add(campaign)
            await s.flush()
            s.add_all(CampaignList(campaign_id=campaign.id, list_id=self.lists[n]) for n in lists)
            if segment is not None:
                seg = Segment(name="Segment", filter=segment)
                s.add(seg)
                await s.flush()
                s.add(CampaignSegment(campaign_id=campaign.id, segment_id=seg.id))
            campaign_id = campaign.id
        async with self.db.transaction() as s:
            _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=2)
        provider = CountingProvider(OutboxProvider(self.outbox / str(campaign_id)))
        urls = TrackingUrls("https://mail.example.com", TokenSigner("scope-test-secret-0123456789"))
        sender = CampaignSender(self.db, provider, "outbox", urls)
        for batch_id in batch_ids:
            assert (await sender.run_batch(batch_id)).done
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(Delivery.subscriber_id, Delivery.id, Delivery.status, Delivery.via_list_ids).where(
                        Delivery.campaign_id == campaign_id
                    )
                )
            ).all()
            status = (await s.get(Campaign, campaign_id)).status  # type: ignore[union-attr]
        assert status is CampaignStatus.FINISHED
        by_person = {sid: name for name, sid in self.people.items()}
        return Sent(
            mailed={e.split("@")[0] for e in provider.sent_to},
            deliveries={by_person[sid]: did for sid, did, _, _ in rows},
            statuses={by_person[sid]: st for sid, _, st, _ in rows},
            via={by_person[sid]: via for sid, _, _, via in rows},
        )

    async def subscriptions(self, name: str) -> dict[str, SubscriptionStatus]:
        names = {v: k for k, v in self.lists.items()}
        async with self.db.session() as s:
            rows = await s.execute(
                select(Subscription.list_id, Subscription.status).where(
                    Subscription.subscriber_id == self.people[name]
                )
            )
            return {names[list_id]: status for list_id, status in rows}

    def ids(self, *names: str) -> list[int]:
        return sorted(self.lists[n] for n in names)


@dataclass
class Sent:
    mailed: set[str]
    deliveries: dict[str, int]
    statuses: dict[str, DeliveryStatus]
    via: dict[str, list[int] | None]


async def one_click(db: Database, delivery_id: int) -> None:
    assert await unsubscribe_delivery(db, delivery_id) is not None


async def provider_event(db: Database, delivery_id: int) -> None:
    """What the webhook route records for a provider's unsubscribe event (correlated by our delivery id)."""
    async with db.session() as s:
        email = (await s.get(Delivery, delivery_id)).email  # type: ignore[union-attr]
    event = NormalizedEvent(
        type=EventType.UNSUBSCRIBE,
        email=email,
        provider="sendgrid",
        occurred_at=datetime.now(UTC),
        raw_event="unsubscribe",
        provider_event_id=f"unsub-{delivery_id}",
        metadata={META_DELIVERY: str(delivery_id)},
    )
    summary = await record_events(db, [event])
    assert summary.stored == 1 and summary.uncorrelated == 0


Unsubscribe = Callable[[Database, int], Awaitable[None]]


@pytest.fixture(params=[one_click, provider_event], ids=["one-click", "provider-event"])
def unsubscribe(request: pytest.FixtureRequest) -> Unsubscribe:
    fn: Unsubscribe = request.param
    return fn


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> World:
    return World(db, tmp_path)


async def test_list_only_campaign(world: World, unsubscribe: Unsubscribe) -> None:
    await world.add_lists("news", "offers")
    await world.add_person("ann", "Berlin", {"news": C, "offers": C})
    await world.add_person("bob", "Paris", {"news": C})
    sent = await world.send(lists=["news"])
    assert sent.mailed == {"ann", "bob"}
    assert sent.via == {"ann": world.ids("news"), "bob": world.ids("news")}

    await unsubscribe(world.db, sent.deliveries["ann"])
    # Only what the campaign reached her through: the list it did not use is hers to keep.
    assert await world.subscriptions("ann") == {"news": X, "offers": C}
    assert await world.subscriptions("bob") == {"news": C}

    again = await world.send(lists=["news"])
    assert again.mailed == {"bob"}
    assert again.statuses["ann"] is DeliveryStatus.SKIPPED


async def test_segment_only_campaign(world: World, unsubscribe: Unsubscribe) -> None:
    await world.add_lists("news", "offers", "events", double=["events"])
    # Reached through two lists the campaign never names; only unconfirmed on a double opt-in list.
    await world.add_person("ann", "Berlin", {"news": C, "offers": U, "events": U})
    await world.add_person("bob", "Berlin", {"news": C})
    await world.add_person("cem", "Paris", {"news": C})
    sent = await world.send(segment=BERLIN)
    assert sent.mailed == {"ann", "bob"}
    # "offers" is single opt-in, so unconfirmed there is sendable; "events" would need a confirmation.
    assert sent.via["ann"] == world.ids("news", "offers")

    await unsubscribe(world.db, sent.deliveries["ann"])
    assert await world.subscriptions("ann") == {"news": X, "offers": X, "events": U}
    assert await world.subscriptions("bob") == {"news": C}

    again = await world.send(segment=BERLIN)
    assert again.mailed == {"bob"}
    assert again.statuses["ann"] is DeliveryStatus.SKIPPED


async def test_lists_and_segment_campaign(world: World, unsubscribe: Unsubscribe) -> None:
    await world.add_lists("news", "offers")
    # ann: on the list and in the segment (reached through both of her lists); bob: on the list only
    # (reached through it alone); cem: in the segment only, through a list the campaign does not target.
    await world.add_person("ann", "Berlin", {"news": C, "offers": C})
    await world.add_person("bob", "Paris", {"news": C, "offers": C})
    await world.add_person("cem", "Berlin", {"offers": C})
    sent = await world.send(lists=["news"], segment=BERLIN)
    assert sent.mailed == {"ann", "bob", "cem"}
    assert sent.via == {
        "ann": world.ids("news", "offers"),
        "bob": world.ids("news"),
        "cem": world.ids("offers"),
    }

    for name in ("ann", "bob", "cem"):
        await unsubscribe(world.db, sent.deliveries[name])
    assert await world.subscriptions("ann") == {"news": X, "offers": X}
    assert await world.subscriptions("bob") == {"news": X, "offers": C}
    assert await world.subscriptions("cem") == {"offers": X}

    again = await world.send(lists=["news"], segment=BERLIN)
    assert again.mailed == set()
    assert set(again.statuses.values()) == {DeliveryStatus.SKIPPED}


async def test_three_lists_of_which_the_segment_covers_two(world: World, unsubscribe: Unsubscribe) -> None:
    await world.add_lists("news", "offers", "events")
    news_or_offers = {
        "or": [{"list": {"listId": world.lists["news"]}}, {"list": {"listId": world.lists["offers"]}}]
    }
    await world.add_person("ann", "Berlin", {"news": C, "offers": C, "events": C})
    await world.add_person("bob", "Berlin", {"news": C, "events": C})
    sent = await world.send(segment=news_or_offers)
    assert sent.mailed == {"ann", "bob"}
    # A segment match is mailed through any list it is on, so all three are hers to leave.
    assert sent.via["ann"] == world.ids("news", "offers", "events")

    await unsubscribe(world.db, sent.deliveries["ann"])
    assert await world.subscriptions("ann") == {"news": X, "offers": X, "events": X}
    assert await world.subscriptions("bob") == {"news": C, "events": C}

    again = await world.send(segment=news_or_offers)
    assert again.mailed == {"bob"}
    # Not even matched any more: on neither list, and sendable through none.
    assert "ann" not in again.mailed
    # A campaign to the list the segment did not cover skips her too.
    events = await world.send(lists=["events"])
    assert events.mailed == {"bob"}


async def test_the_scope_is_what_reached_the_person_when_sent(world: World, unsubscribe: Unsubscribe) -> None:
    await world.add_lists("news", "later")
    await world.add_person("ann", "Berlin", {"news": C})
    sent = await world.send(segment=BERLIN)
    assert sent.via["ann"] == world.ids("news")
    # Joined after the mail went out: that mail did not reach her through it, so its link does not touch it.
    await world.subscribe("ann", "later")
    await unsubscribe(world.db, sent.deliveries["ann"])
    assert await world.subscriptions("ann") == {"news": X, "later": C}


async def test_unsubscribing_again_after_resubscribing_leaves_the_lists_again(world: World) -> None:
    await world.add_lists("news", "offers")
    await world.add_person("ann", "Berlin", {"news": C, "offers": C})
    sent = await world.send(segment=BERLIN)
    await one_click(world.db, sent.deliveries["ann"])
    async with world.db.transaction() as s:
        for sub in (await s.execute(select(Subscription))).scalars():
            sub.status = C
    # An old link keeps working: the event is not recorded twice, the lists are left again.
    outcome = await unsubscribe_delivery(world.db, sent.deliveries["ann"])
    assert outcome is not None and outcome.changed == 2
    assert await world.subscriptions("ann") == {"news": X, "offers": X}


async def test_a_delivery_recorded_before_scopes_falls_back_safely(world: World) -> None:
    """Rows from before migration 0007 have no scope: a list-only campaign's lists, else every list."""
    await world.add_lists("news", "offers")
    await world.add_person("ann", "Berlin", {"news": C, "offers": C})
    await world.add_person("bob", "Berlin", {"news": C, "offers": C})
    by_lists = await world.send(lists=["news"])
    by_segment = await world.send(segment=BERLIN)
    async with world.db.transaction() as s:
        for delivery in (await s.execute(select(Delivery))).scalars():
            delivery.via_list_ids = None
    await one_click(world.db, by_lists.deliveries["ann"])
    assert await world.subscriptions("ann") == {"news": X, "offers": C}
    await one_click(world.db, by_segment.deliveries["bob"])
    assert await world.subscriptions("bob") == {"news": X, "offers": X}
