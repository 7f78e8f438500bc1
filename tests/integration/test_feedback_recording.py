"""Recording events against a real database: correlation, dedupe, counters, policy, complaint guard."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.feedback import BounceType, CampaignLink, Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.domain.audience import targeting as audience
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.feedback import FeedbackPolicy, IncomingEvent, is_suppressed, record_events
from emailkit.domain.feedback.live import stats_channel
from emailkit.domain.ports.webhooks import NormalizedEvent
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.tasks.pubsub import InProcessPubSub
from tests.support.feedback import T0, ev, seed_sent_campaign, stats, subscriber


async def events(db: Database) -> list[Event]:
    async with db.session() as s:
        return list((await s.execute(select(Event).order_by(Event.id))).scalars())


async def subscription_statuses(db: Database, subscriber_id: int) -> dict[int, SubscriptionStatus]:
    async with db.session() as s:
        rows = await s.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == subscriber_id
            )
        )
        return {lid: st for lid, st in rows}


async def test_correlates_by_metadata_then_message_id_then_address(db: Database) -> None:
    seeded = await seed_sent_campaign(
        db,
        ["a@x.test", "b@x.test", "c@x.test", "d@x.test"],
        # SendGrid gives one X-Message-Id to every recipient of a batch request.
        message_ids={"b@x.test": "batch-1", "c@x.test": "batch-1"},
    )
    summary = await record_events(
        db,
        [
            ev(EventType.DELIVERED, "a@x.test", delivery=seeded.deliveries["a@x.test"]),
            ev(EventType.DELIVERED, "c@x.test", message_id="batch-1"),
            ev(EventType.DELIVERED, "d@x.test"),
            ev(EventType.DELIVERED, "stranger@x.test"),
        ],
    )
    assert (summary.received, summary.stored, summary.duplicates, summary.uncorrelated) == (4, 4, 0, 1)
    stored = {e.email: e for e in await events(db)}
    for email in ("a@x.test", "c@x.test", "d@x.test"):
        assert stored[email].delivery_id == seeded.deliveries[email]
        assert stored[email].campaign_id == seeded.campaign_id
        assert stored[email].subscriber_id == seeded.subscribers[email]
    assert stored["stranger@x.test"].delivery_id is None
    assert stored["stranger@x.test"].campaign_id is None
    assert await stats(db, seeded.campaign_id) == {"delivered": 3}


async def test_claimed_ids_that_do_not_exist_are_ignored(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    await record_events(db, [ev(EventType.OPEN, "a@x.test", delivery=999_999, campaign=888_888)])
    (stored,) = await events(db)
    # Falls back to the address: the latest delivery sent to that subscriber.
    assert stored.delivery_id == seeded.deliveries["a@x.test"]
    assert stored.campaign_id == seeded.campaign_id


async def test_provider_retries_store_nothing_and_change_no_counter(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    d = seeded.deliveries["a@x.test"]
    batch = [
        ev(EventType.DELIVERED, "a@x.test", delivery=d, event_id="e1"),
        ev(EventType.OPEN, "a@x.test", delivery=d, event_id="e2"),
        ev(EventType.CLICK, "a@x.test", delivery=d, event_id="e3", url="https://example.org/a"),
    ]
    first = await record_events(db, batch)
    before = await stats(db, seeded.campaign_id)
    again = await record_events(db, [*batch, batch[0]])
    assert (first.stored, again.stored, again.duplicates) == (3, 0, 4)
    assert await stats(db, seeded.campaign_id) == before
    assert len(await events(db)) == 3
    assert again.campaigns == set()


async def test_counters_unique_opens_clicks_and_links(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test", "b@x.test"])
    a, b = seeded.deliveries["a@x.test"], seeded.deliveries["b@x.test"]
    home, shop = "https://example.org/", "https://example.org/shop?x=1"
    await record_events(
        db,
        [
            ev(EventType.OPEN, "a@x.test", delivery=a, event_id="o1"),
            ev(EventType.OPEN, "a@x.test", delivery=a, event_id="o2", at=T0 + timedelta(hours=1)),
            ev(EventType.OPEN, "b@x.test", delivery=b, event_id="o3"),
            ev(EventType.CLICK, "a@x.test", delivery=a, event_id="c1", url=home),
            ev(EventType.CLICK, "a@x.test", delivery=a, event_id="c2", url=home),
            ev(EventType.CLICK, "a@x.test", delivery=a, event_id="c3", url=shop),
            ev(EventType.CLICK, "b@x.test", delivery=b, event_id="c4", url=shop),
        ],
    )
    # A later batch: uniqueness holds across batches too.
    await record_events(db, [IncomingEvent(EventType.CLICK, delivery_id=b, url=shop, occurred_at=T0)])
    assert await stats(db, seeded.campaign_id) == {
        "opens": 3,
        "unique_opens": 2,
        "clicks": 5,
        "unique_clicks": 2,
    }
    async with db.session() as s:
        links = {
            row.url: (row.clicks, row.unique_clicks)
            for row in (await s.execute(select(CampaignLink))).scalars()
        }
    assert links == {home: (2, 1), shop: (3, 2)}


async def test_anonymous_hits_count_without_identity(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    d = seeded.deliveries["a@x.test"]
    summary = await record_events(
        db,
        [
            IncomingEvent(EventType.OPEN, delivery_id=d, ip="192.0.2.1", user_agent="UA", anonymous=True),
            IncomingEvent(
                EventType.CLICK, delivery_id=d, url="https://example.org/", ip="192.0.2.1", anonymous=True
            ),
        ],
    )
    assert summary.stored == 2
    for stored in await events(db):
        assert stored.campaign_id == seeded.campaign_id
        assert (stored.delivery_id, stored.subscriber_id, stored.email, stored.ip, stored.user_agent) == (
            None,
            None,
            None,
            None,
            None,
        )
    assert await stats(db, seeded.campaign_id) == {"opens": 1, "clicks": 1}


async def test_own_dedupe_keys_make_tracking_hits_idempotent(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    hit = IncomingEvent(
        EventType.UNSUBSCRIBE, delivery_id=seeded.deliveries["a@x.test"], dedupe_key="unsub:1"
    )
    assert (await record_events(db, [hit])).stored == 1
    assert (await record_events(db, [hit])).stored == 0
    assert await stats(db, seeded.campaign_id) == {"unsubscribed": 1}


async def test_hard_bounce_and_complaint_suppress_and_blocklist_at_once(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["hard@x.test", "spam@x.test", "soft@x.test"])
    summary = await record_events(
        db,
        [
            ev(EventType.BOUNCE, "hard@x.test", bounce=BounceType.HARD),
            ev(EventType.COMPLAINT, "spam@x.test"),
            ev(EventType.BOUNCE, "soft@x.test", bounce=BounceType.SOFT),
        ],
    )
    assert summary.suppressed == 2
    async with db.session() as s:
        assert await is_suppressed(s, "HARD@x.test")
        assert await is_suppressed(s, "spam@x.test")
        assert not await is_suppressed(s, "soft@x.test")
        reasons = {e: r for e, r in await s.execute(select(Suppression.email, Suppression.reason))}
    assert reasons == {
        "hard@x.test": SuppressionReason.HARD_BOUNCE,
        "spam@x.test": SuppressionReason.COMPLAINT,
    }
    for email in ("hard@x.test", "spam@x.test"):
        sub = await subscriber(db, email)
        assert sub.status is SubscriberStatus.BLOCKLISTED
        assert set((await subscription_statuses(db, sub.id)).values()) == {SubscriptionStatus.UNSUBSCRIBED}
    assert (await subscriber(db, "soft@x.test")).status is SubscriberStatus.ENABLED
    assert await stats(db, seeded.campaign_id) == {"bounced": 2, "complained": 1}


async def test_soft_bounces_suppress_once_the_limit_is_reached_within_the_window(db: Database) -> None:
    await seed_sent_campaign(db, ["soft@x.test", "slow@x.test"])
    policy = FeedbackPolicy(soft_bounce_limit=3, soft_bounce_window=timedelta(days=7))

    def soft(email: str, day: int) -> NormalizedEvent:
        return ev(EventType.BOUNCE, email, bounce=BounceType.SOFT, at=T0 + timedelta(days=day))

    # Three within a week: suppressed on the third, in separate batches.
    for day in (0, 2):
        assert (await record_events(db, [soft("soft@x.test", day)], policy=policy)).suppressed == 0
    # Spread over more than a week: never three inside one window.
    for day in (0, 8, 16):
        assert (await record_events(db, [soft("slow@x.test", day)], policy=policy)).suppressed == 0
    assert (await record_events(db, [soft("soft@x.test", 5)], policy=policy)).suppressed == 1
    async with db.session() as s:
        row = (await s.execute(select(Suppression))).scalar_one()
    assert (row.email, row.reason) == ("soft@x.test", SuppressionReason.SOFT_BOUNCE)
    assert "3 soft bounces" in (row.detail or "")
    assert (await subscriber(db, "soft@x.test")).status is SubscriberStatus.BLOCKLISTED
    assert (await subscriber(db, "slow@x.test")).status is SubscriberStatus.ENABLED


async def test_unsubscribe_leaves_the_campaign_lists_only(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test", "b@x.test"])
    summary = await record_events(
        db,
        [
            ev(EventType.UNSUBSCRIBE, "a@x.test", delivery=seeded.deliveries["a@x.test"]),
            # No campaign to go by: every list.
            IncomingEvent(EventType.UNSUBSCRIBE, email="b@x.test", provider="brevo", occurred_at=T0),
        ],
    )
    a = await subscription_statuses(db, seeded.subscribers["a@x.test"])
    assert a == {
        seeded.target_list: SubscriptionStatus.UNSUBSCRIBED,
        seeded.other_list: SubscriptionStatus.CONFIRMED,
    }
    # b's latest delivery is this campaign's, so the address fallback ties it to the campaign as well.
    b = await subscription_statuses(db, seeded.subscribers["b@x.test"])
    assert b == {
        seeded.target_list: SubscriptionStatus.UNSUBSCRIBED,
        seeded.other_list: SubscriptionStatus.CONFIRMED,
    }
    assert summary.unsubscribed == 2
    assert await stats(db, seeded.campaign_id) == {"unsubscribed": 2}


async def test_unsubscribe_without_any_campaign_leaves_every_list(db: Database) -> None:
    async with db.transaction() as s:
        lists = [MailingList(name="A"), MailingList(name="B")]
        sub = Subscriber(email="solo@x.test")
        s.add_all([*lists, sub])
        await s.flush()
        s.add_all([Subscription(subscriber_id=sub.id, list_id=lst.id) for lst in lists])
    summary = await record_events(db, [IncomingEvent(EventType.UNSUBSCRIBE, email="solo@x.test")])
    assert summary.unsubscribed == 2
    assert set((await subscription_statuses(db, sub.id)).values()) == {SubscriptionStatus.UNSUBSCRIBED}


async def test_complaint_guard_pauses_a_running_campaign(db: Database) -> None:
    emails = [f"r{i}@x.test" for i in range(12)]
    seeded = await seed_sent_campaign(db, emails)
    policy = FeedbackPolicy(complaint_pause_rate=0.1, complaint_min_sample=10)
    delivered = [ev(EventType.DELIVERED, e, delivery=seeded.deliveries[e]) for e in emails]
    summary = await record_events(db, [*delivered, ev(EventType.COMPLAINT, "r0@x.test")], policy=policy)
    assert summary.paused == []  # 1 of 12: below 10%
    summary = await record_events(db, [ev(EventType.COMPLAINT, "r1@x.test")], policy=policy)
    assert summary.paused == [seeded.campaign_id]  # 2 of 12
    async with db.session() as s:
        campaign = await s.get(Campaign, seeded.campaign_id)
    assert campaign is not None
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.status_reason is not None and "complaint rate 16.67% (2 of 12)" in campaign.status_reason


async def test_complaint_guard_waits_for_the_minimum_sample_and_spares_other_states(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test", "b@x.test"])
    policy = FeedbackPolicy(complaint_pause_rate=0.1, complaint_min_sample=10)
    summary = await record_events(db, [ev(EventType.COMPLAINT, "a@x.test")], policy=policy)
    assert summary.paused == []  # 50%, but only 2 sent
    finished = await seed_sent_campaign(
        db, [f"f{i}@x.test" for i in range(10)], status=CampaignStatus.FINISHED
    )
    summary = await record_events(db, [ev(EventType.COMPLAINT, "f0@x.test")], policy=policy)
    assert summary.paused == []
    async with db.session() as s:
        assert (await s.get(Campaign, seeded.campaign_id)).status is CampaignStatus.RUNNING  # type: ignore[union-attr]
        assert (await s.get(Campaign, finished.campaign_id)).status is CampaignStatus.FINISHED  # type: ignore[union-attr]


async def test_suppressed_addresses_are_skipped_by_the_audience(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["ok@x.test", "gone@x.test"])
    await record_events(db, [ev(EventType.BOUNCE, "gone@x.test", bounce=BounceType.HARD)])
    async with db.transaction() as s:
        # Manually suppressed, yet still ENABLED: the suppression alone must stop the send.
        s.add(
            Suppression(
                email="ok@x.test",
                email_hash=email_hash("ok@x.test"),
                reason=SuppressionReason.MANUAL,
                source="api",
            )
        )
    async with db.session() as s:
        rows = (await s.execute(audience.recipients_stmt([seeded.target_list], 0, 10**9))).all()
    reasons = {
        email: audience.skip_reason(status, int(sendable or 0), int(unconf or 0))
        for _, email, status, sendable, unconf, _via in rows
    }
    assert reasons == {"ok@x.test": audience.SKIP_SUPPRESSED, "gone@x.test": audience.SKIP_BLOCKLISTED}


async def test_live_stats_are_published_after_commit(db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    pubsub = InProcessPubSub()
    live = CoalescingPublisher(pubsub, interval=0)
    async with pubsub.subscribe(stats_channel(seeded.campaign_id)) as updates:
        await record_events(db, [ev(EventType.DELIVERED, "a@x.test")], live=live)
        message = await anext(aiter(updates))
    assert message["delivered"] == 1
    assert message["recipients"] == 1 and message["sent"] == 1
    await pubsub.close()


async def test_a_batch_of_a_thousand_in_one_call(db: Database) -> None:
    emails = [f"u{i}@x.test" for i in range(200)]
    seeded = await seed_sent_campaign(db, emails)
    batch: list[Any] = []
    for i, email in enumerate(emails):
        d = seeded.deliveries[email]
        batch += [
            ev(EventType.DELIVERED, email, delivery=d, event_id=f"d{i}"),
            ev(EventType.OPEN, email, delivery=d, event_id=f"o{i}"),
            ev(EventType.OPEN, email, delivery=d, event_id=f"o{i}b"),
            ev(EventType.CLICK, email, delivery=d, event_id=f"c{i}", url=f"https://example.org/{i % 7}"),
            ev(EventType.DEFERRED, email, delivery=d, event_id=f"f{i}"),
        ]
    summary = await record_events(db, batch)
    assert (summary.stored, summary.duplicates, summary.uncorrelated) == (1000, 0, 0)
    assert await stats(db, seeded.campaign_id) == {
        "delivered": 200,
        "opens": 400,
        "unique_opens": 200,
        "clicks": 200,
        "unique_clicks": 200,
    }
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Event))).scalar() == 1000
