"""The feedback loop across workspaces: every event is stored, counted and acted upon in the workspace of what it
is about, whatever scope the recording is called from; on PostgreSQL under row-level security (the suites
connect as a role held to it)."""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.feedback import (
    BounceType,
    CampaignFirst,
    CampaignLink,
    CampaignStats,
    CampaignTimeline,
    Event,
    EventType,
)
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.audience import targeting as audience
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.feedback import FeedbackPolicy, is_suppressed, record_events
from emailkit.domain.feedback.hits import unsubscribe_delivery
from emailkit.domain.tokens import TokenSigner
from tests.support.environment import TEST_SECRET
from tests.support.feedback import T0, Seeded, add_workspace, ev, seed_sent_campaign, stats
from tests.support.webhooks import webhook_clients

T = TypeVar("T")
A = "a@x.test"
SHOP = "https://example.org/shop"


async def seed_in(db: Database, workspace_id: int, emails: list[str], **kwargs: Any) -> Seeded:
    with workspace_scope(workspace_id):
        return await seed_sent_campaign(db, emails, **kwargs)


async def outside_any_scope(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` as a public route or a job starts: with no workspace in scope (not even the test's)."""
    return await asyncio.create_task(coro, context=contextvars.Context())


async def all_rows(db: Database, model: type[Any]) -> list[Any]:
    """Every row of `model`, whichever workspace it is in."""
    with all_workspaces():
        async with db.session() as s:
            return list((await s.execute(select(model))).scalars())


async def visible_events(db: Database, workspace_id: int) -> list[Event]:
    with workspace_scope(workspace_id):
        async with db.session() as s:
            return list((await s.execute(select(Event).order_by(Event.id))).scalars())


async def subscriber_in(db: Database, workspace_id: int, email: str) -> Subscriber:
    with workspace_scope(workspace_id):
        async with db.session() as s:
            return (await s.execute(select(Subscriber).where(Subscriber.email == email))).scalar_one()


async def statuses_in(db: Database, workspace_id: int, subscriber_id: int) -> set[SubscriptionStatus]:
    with workspace_scope(workspace_id):
        async with db.session() as s:
            rows = await s.execute(
                select(Subscription.status).where(Subscription.subscriber_id == subscriber_id)
            )
            return set(rows.scalars())


async def stats_in(db: Database, workspace_id: int, campaign_id: int) -> dict[str, int]:
    with workspace_scope(workspace_id):
        return await stats(db, campaign_id)


@dataclass
class Two:
    """The same address sent a campaign by the default workspace (`first`) and by a second one (`second`,
    in workspace `w2`)."""

    first: Seeded
    second: Seeded
    w2: int


@pytest.fixture
async def two(db: Database) -> Two:
    w2 = await add_workspace(db, "second")
    return Two(
        await seed_in(db, DEFAULT_WORKSPACE_ID, [A, "b@x.test"]), await seed_in(db, w2, [A, "c@x.test"]), w2
    )


async def test_an_event_of_a_second_workspace_is_stored_and_counted_there(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    d = second.deliveries[A]
    # Called from the default workspace's scope (the test's): the recording is system work all the same.
    await record_events(
        db,
        [
            ev(EventType.OPEN, A, delivery=d),
            ev(EventType.CLICK, A, delivery=d, url=SHOP),
            ev(EventType.DELIVERED, "c@x.test", delivery=second.deliveries["c@x.test"]),
        ],
    )
    (opened, clicked, delivered) = await visible_events(db, w2)
    assert {(e.type, e.delivery_id, e.campaign_id, e.workspace_id) for e in (opened, clicked)} == {
        (EventType.OPEN, d, second.campaign_id, w2),
        (EventType.CLICK, d, second.campaign_id, w2),
    }
    assert opened.subscriber_id == second.subscribers[A]
    assert delivered.workspace_id == w2
    assert await stats_in(db, w2, second.campaign_id) == {
        "delivered": 1,
        "opens": 1,
        "unique_opens": 1,
        "clicks": 1,
        "unique_clicks": 1,
    }
    # Every row the batch wrote is the second workspace's.
    for model in (CampaignStats, CampaignLink, CampaignTimeline, CampaignFirst, Event):
        rows = await all_rows(db, model)
        assert rows and {r.workspace_id for r in rows} == {w2}, model
    # The default workspace sees none of it.
    assert await visible_events(db, 1) == []
    assert await stats_in(db, 1, second.campaign_id) == {}
    assert await stats_in(db, 1, first.campaign_id) == {}


async def test_events_of_both_workspaces_in_one_batch_go_each_to_its_own(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    await record_events(
        db,
        [
            ev(EventType.OPEN, A, delivery=first.deliveries[A], event_id="o1"),
            ev(EventType.OPEN, A, delivery=second.deliveries[A], event_id="o2"),
            ev(EventType.OPEN, "b@x.test", delivery=first.deliveries["b@x.test"], event_id="o3"),
        ],
    )
    assert [e.delivery_id for e in await visible_events(db, 1)] == [
        first.deliveries[A],
        first.deliveries["b@x.test"],
    ]
    assert [e.delivery_id for e in await visible_events(db, w2)] == [second.deliveries[A]]
    assert await stats_in(db, 1, first.campaign_id) == {"opens": 2, "unique_opens": 2}
    assert await stats_in(db, w2, second.campaign_id) == {"opens": 1, "unique_opens": 1}


async def test_a_hard_bounce_in_a_second_workspace_suppresses_the_address_there_only(
    db: Database, two: Two
) -> None:
    first, second, w2 = two.first, two.second, two.w2
    summary = await record_events(
        db, [ev(EventType.BOUNCE, A, delivery=second.deliveries[A], bounce=BounceType.HARD)]
    )
    assert summary.suppressed == 1
    (entry,) = await all_rows(db, Suppression)
    assert (entry.workspace_id, entry.email, entry.reason, entry.campaign_id) == (
        w2,
        A,
        SuppressionReason.HARD_BOUNCE,
        second.campaign_id,
    )
    with workspace_scope(w2):
        async with db.session() as s:
            assert await is_suppressed(s, A)
    assert (await subscriber_in(db, w2, A)).status is SubscriberStatus.BLOCKLISTED
    assert await statuses_in(db, w2, second.subscribers[A]) == {SubscriptionStatus.UNSUBSCRIBED}
    # The same address in the default workspace stays sendable.
    async with db.session() as s:
        assert not await is_suppressed(s, A)
        rows = (await s.execute(audience.recipients_stmt([first.target_list], 0, 10**9))).all()
    reasons = {
        email: audience.skip_reason(status, int(sendable or 0), int(unconf or 0))
        for _, email, status, sendable, unconf, _via in rows
    }
    assert reasons == {A: None, "b@x.test": None}
    assert (await subscriber_in(db, 1, A)).status is SubscriberStatus.ENABLED
    assert await statuses_in(db, 1, first.subscribers[A]) == {SubscriptionStatus.CONFIRMED}


async def test_soft_bounces_are_counted_per_workspace(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    policy = FeedbackPolicy(soft_bounce_limit=2)

    def soft(seeded: Seeded, hours: int) -> Any:
        return ev(
            EventType.BOUNCE,
            A,
            delivery=seeded.deliveries[A],
            bounce=BounceType.SOFT,
            at=T0 + timedelta(hours=hours),
        )

    # One each: neither workspace has reached two.
    assert (await record_events(db, [soft(first, 0), soft(second, 1)], policy=policy)).suppressed == 0
    assert (await record_events(db, [soft(second, 2)], policy=policy)).suppressed == 1
    assert [(e.workspace_id, e.reason) for e in await all_rows(db, Suppression)] == [
        (w2, SuppressionReason.SOFT_BOUNCE)
    ]


async def test_an_unsubscribe_in_a_second_workspace_leaves_its_lists_only(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    summary = await record_events(db, [ev(EventType.UNSUBSCRIBE, A, delivery=second.deliveries[A])])
    assert summary.unsubscribed == 1  # the campaign's target list, not the other one
    assert await statuses_in(db, w2, second.subscribers[A]) == {
        SubscriptionStatus.UNSUBSCRIBED,
        SubscriptionStatus.CONFIRMED,
    }
    assert await statuses_in(db, 1, first.subscribers[A]) == {SubscriptionStatus.CONFIRMED}
    assert await stats_in(db, w2, second.campaign_id) == {"unsubscribed": 1}


async def test_an_event_tied_to_nothing_lands_in_the_default_workspace(db: Database, two: Two) -> None:
    with workspace_scope(two.w2):
        # The caller's scope does not decide: the default workspace does.
        summary = await record_events(
            db, [ev(EventType.BOUNCE, "stranger@x.test", bounce=BounceType.HARD, campaign=999_999)]
        )
    assert (summary.stored, summary.uncorrelated, summary.suppressed) == (1, 1, 1)
    (stored,) = await all_rows(db, Event)
    assert (stored.workspace_id, stored.campaign_id, stored.subscriber_id) == (
        DEFAULT_WORKSPACE_ID,
        None,
        None,
    )
    (entry,) = await all_rows(db, Suppression)
    assert entry.workspace_id == DEFAULT_WORKSPACE_ID


async def test_an_address_in_several_workspaces_is_resolved_by_what_the_event_names(
    db: Database, two: Two
) -> None:
    first, second, w2 = two.first, two.second, two.w2
    third = await add_workspace(db, "third")
    await seed_in(db, third, ["c@x.test", "only3@x.test"])
    await record_events(
        db,
        [
            # Nothing but the address, which two workspaces have: the default one.
            ev(EventType.OPEN, A, event_id="plain"),
            # The claimed campaign names the workspace, and the subscriber is looked for there.
            ev(EventType.OPEN, A, campaign=second.campaign_id, event_id="claimed"),
            # The second and third workspaces have it, the default one does not: the lowest.
            ev(EventType.OPEN, "c@x.test", event_id="lowest"),
            ev(EventType.OPEN, "only3@x.test", event_id="only"),
            # A subscriber claimed from another workspace than the campaign's is not taken.
            ev(
                EventType.OPEN,
                "c@x.test",
                campaign=first.campaign_id,
                custom={"emailkit_subscriber": str(second.subscribers["c@x.test"])},
                event_id="mixed",
            ),
        ],
    )
    by_address = {(e.email, e.workspace_id): e for e in await all_rows(db, Event)}
    assert len(by_address) == 5
    plain = by_address[(A, 1)]
    assert (plain.delivery_id, plain.subscriber_id) == (first.deliveries[A], first.subscribers[A])
    claimed = by_address[(A, w2)]
    assert (claimed.delivery_id, claimed.campaign_id) == (second.deliveries[A], second.campaign_id)
    assert by_address[("c@x.test", w2)].delivery_id == second.deliveries["c@x.test"]
    assert by_address[("only3@x.test", third)].subscriber_id is not None
    mixed = by_address[("c@x.test", 1)]
    assert (mixed.campaign_id, mixed.subscriber_id, mixed.delivery_id) == (first.campaign_id, None, None)


async def test_the_complaint_guard_pauses_a_second_workspaces_campaign(db: Database) -> None:
    w2 = await add_workspace(db, "second")
    emails = [f"r{i}@x.test" for i in range(10)]
    second = await seed_in(db, w2, emails)
    policy = FeedbackPolicy(complaint_pause_rate=0.1, complaint_min_sample=10)
    complaints = [ev(EventType.COMPLAINT, e, delivery=second.deliveries[e]) for e in emails[:2]]
    summary = await record_events(db, complaints, policy=policy)
    assert summary.paused == [second.campaign_id]
    with workspace_scope(w2):
        async with db.session() as s:
            campaign = await s.get(Campaign, second.campaign_id)
    assert campaign is not None and campaign.status is CampaignStatus.PAUSED
    assert {e.workspace_id for e in await all_rows(db, Suppression)} == {w2}


async def test_a_one_click_unsubscribe_acts_in_the_deliverys_workspace(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    outcome = await outside_any_scope(unsubscribe_delivery(db, second.deliveries[A], ip="203.0.113.9"))
    assert outcome is not None and (outcome.email, outcome.changed) == (A, 1)
    assert SubscriptionStatus.UNSUBSCRIBED in await statuses_in(db, w2, second.subscribers[A])
    assert await statuses_in(db, 1, first.subscribers[A]) == {SubscriptionStatus.CONFIRMED}
    (event,) = await visible_events(db, w2)
    assert (event.type, event.ip) == (EventType.UNSUBSCRIBE, "203.0.113.9")
    assert await visible_events(db, 1) == []
    # Inside a workspace, another workspace's delivery is unknown.
    assert await unsubscribe_delivery(db, second.deliveries[A]) is None
    assert await outside_any_scope(unsubscribe_delivery(db, 999_999)) is None


async def test_tracking_hits_and_webhooks_land_in_their_deliverys_workspace(db: Database, two: Two) -> None:
    first, second, w2 = two.first, two.second, two.w2
    urls = TrackingUrls("http://testserver", TokenSigner(TEST_SECRET))
    at = int(T0.timestamp())
    sendgrid = [
        {"email": A, "event": "bounce", "type": "bounce", "timestamp": at, "sg_event_id": "b1"}
        | {"emailkit_delivery": str(second.deliveries[A])},
        {"email": A, "event": "delivered", "timestamp": at, "sg_event_id": "d1"}
        | {"emailkit_delivery": str(first.deliveries[A])},
    ]
    async with webhook_clients(db) as make:
        client, app = await make(webhook_verify=False)
        async with app.router.lifespan_context(app):
            # As in production, the public routes start with no workspace in scope.
            for url in (urls.open_pixel(second.deliveries[A]), urls.click(first.deliveries[A], SHOP)):
                resp = await outside_any_scope(client.get(url.removeprefix("http://testserver")))
                assert resp.status_code in (200, 302)
            await app.state.tracking.hits.flush()
            resp = await outside_any_scope(client.post("/webhooks/sendgrid", content=json.dumps(sendgrid)))
            assert resp.status_code == 200, resp.text
    assert {(e.type, e.delivery_id) for e in await visible_events(db, w2)} == {
        (EventType.OPEN, second.deliveries[A]),
        (EventType.BOUNCE, second.deliveries[A]),
    }
    assert {(e.type, e.delivery_id) for e in await visible_events(db, 1)} == {
        (EventType.CLICK, first.deliveries[A]),
        (EventType.DELIVERED, first.deliveries[A]),
    }
    assert [e.workspace_id for e in await all_rows(db, Suppression)] == [w2]
