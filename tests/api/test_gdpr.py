"""GDPR: exportSubscriberData returns everything held about a person; eraseSubscriber removes it for good."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import ImportStatus, Suppression, SuppressionReason
from emailkit.db.tables.feedback import CampaignStats, Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import gdpr, lists, subscribers, suppressions
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.feedback.recording import record
from emailkit.domain.feedback.types import FeedbackPolicy, IncomingEvent
from emailkit.schema.relay import to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data

EXPORT = "query($id: ID!) { exportSubscriberData(id: $id) }"
ERASE = "mutation($i: EraseSubscriberInput!) { eraseSubscriber(input: $i) { erasedId userErrors { field code } } }"
TRACKED_URL = "https://shop.example/welcome?who=anna@example.com"


@dataclass
class World:
    anna: int
    bob: int
    list_id: int
    campaign: int
    anna_delivery: int
    bob_delivery: int


async def build(db: Database) -> World:
    """Two subscribers who received a campaign, opened it and clicked, as the feedback loop records it."""
    async with db.transaction() as s:
        news = await lists.create_list(s, lists.ListInput(name="News"))
        anna = await subscribers.create_subscriber(
            s,
            "anna@example.com",
            name="Anna",
            attributes={"city": "Berlin", "plan": {"tier": "pro"}},
            list_ids=[news.id],
        )
        bob = await subscribers.create_subscriber(s, "bob@example.com", name="Bob", list_ids=[news.id])
        campaign = Campaign(
            name="Spring",
            subject="Hello",
            from_email="news@example.com",
            status=CampaignStatus.FINISHED,
            recipients_count=2,
            sent_count=2,
        )
        s.add(campaign)
        await s.flush()
        sent = utcnow() - timedelta(hours=1)
        deliveries = [
            Delivery(
                campaign_id=campaign.id,
                subscriber_id=anna.id,
                email=anna.email,
                status=DeliveryStatus.SENT,
                provider="outbox",
                attempts=2,
                last_error="451 4.2.2 <ANNA@example.com>: mailbox full, retried",
                sent_at=sent,
            ),
            Delivery(
                campaign_id=campaign.id,
                subscriber_id=bob.id,
                email=bob.email,
                status=DeliveryStatus.SENT,
                provider="outbox",
                attempts=1,
                sent_at=sent,
            ),
        ]
        s.add_all(deliveries)
        await s.flush()
        hits = [
            IncomingEvent(
                EventType.OPEN, delivery_id=deliveries[0].id, ip="203.0.113.7", user_agent="Mail/1.0"
            ),
            IncomingEvent(EventType.CLICK, delivery_id=deliveries[0].id, url=TRACKED_URL, ip="203.0.113.7"),
            IncomingEvent(EventType.CLICK, delivery_id=deliveries[0].id, url="https://shop.example/sale"),
            IncomingEvent(
                EventType.OPEN, delivery_id=deliveries[1].id, ip="198.51.100.2", user_agent="Other"
            ),
        ]
        await record(s, hits, FeedbackPolicy(), utcnow())
        return World(anna.id, bob.id, news.id, campaign.id, deliveries[0].id, deliveries[1].id)


async def counters(db: Database, campaign_id: int) -> tuple[Any, ...]:
    async with db.session() as s:
        c = await s.get(Campaign, campaign_id)
        stats = await s.get(CampaignStats, campaign_id)
        assert c is not None and stats is not None
        return (
            c.recipients_count,
            c.sent_count,
            c.failed_count,
            stats.opens,
            stats.unique_opens,
            stats.clicks,
            stats.unique_clicks,
        )


async def test_export_holds_everything_about_the_person(gql: GQL, db: Database) -> None:
    world = await build(db)
    doc = data(await gql(EXPORT, {"id": to_global_id("Subscriber", world.anna)}))["exportSubscriberData"]

    assert doc["profile"]["id"] == to_global_id("Subscriber", world.anna)
    assert (doc["profile"]["email"], doc["profile"]["name"], doc["profile"]["status"]) == (
        "anna@example.com",
        "Anna",
        "ENABLED",
    )
    assert doc["attributes"] == {"city": "Berlin", "plan": {"tier": "pro"}}
    assert [(s["list"]["name"], s["status"]) for s in doc["subscriptions"]] == [("News", "CONFIRMED")]
    assert len(doc["deliveries"]) == 1
    delivery = doc["deliveries"][0]
    assert delivery["campaign"] == {
        "id": to_global_id("Campaign", world.campaign),
        "name": "Spring",
        "subject": "Hello",
    }
    assert (delivery["email"], delivery["status"], delivery["attempts"]) == ("anna@example.com", "SENT", 2)
    assert delivery["lastError"].startswith("451 4.2.2 <ANNA@example.com>")
    assert sorted((e["type"], e["url"], e["ip"], e["userAgent"]) for e in doc["events"]) == [
        ("CLICK", "https://shop.example/sale", None, None),
        ("CLICK", TRACKED_URL, "203.0.113.7", None),
        ("OPEN", None, "203.0.113.7", "Mail/1.0"),
    ]
    assert {e["campaign"] for e in doc["events"]} == {to_global_id("Campaign", world.campaign)}
    assert doc["suppression"] is None
    assert doc["exportedAt"]

    assert (
        data(await gql(EXPORT, {"id": to_global_id("Subscriber", 999_999)}))["exportSubscriberData"] is None
    )
    bad = await gql(EXPORT, {"id": "nope"})
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_ID"


async def test_erase_removes_personal_data_and_keeps_totals(gql: GQL, db: Database) -> None:
    world = await build(db)
    before = await counters(db, world.campaign)
    anna_id = to_global_id("Subscriber", world.anna)

    out = data(await gql(ERASE, {"i": {"id": anna_id}}))["eraseSubscriber"]
    assert out == {"erasedId": anna_id, "userErrors": []}

    # Gone from every query.
    gone = data(
        await gql(
            'query($id: ID!) { subscriber(id: $id) { id } byEmail: subscriber(email: "anna@example.com") { id } '
            "node(id: $id) { id } subscribers { totalCount edges { node { email } } } }",
            {"id": anna_id},
        )
    )
    assert (gone["subscriber"], gone["byEmail"], gone["node"]) == (None, None, None)
    assert [e["node"]["email"] for e in gone["subscribers"]["edges"]] == ["bob@example.com"]
    assert data(await gql(EXPORT, {"id": anna_id}))["exportSubscriberData"] is None

    # Totals are untouched; the rows behind them stay, without the person.
    assert await counters(db, world.campaign) == before
    async with db.session() as s:
        anna_delivery = await s.get(Delivery, world.anna_delivery)
        bob_delivery = await s.get(Delivery, world.bob_delivery)
        events = (await s.execute(select(Event).order_by(Event.id))).scalars().all()
        suppression = (
            await s.execute(
                select(Suppression).where(Suppression.email_hash == email_hash("anna@example.com"))
            )
        ).scalar_one()
    assert anna_delivery is not None and bob_delivery is not None
    assert (anna_delivery.email, anna_delivery.subscriber_id, anna_delivery.status) == (
        gdpr.ERASED_EMAIL,
        None,
        DeliveryStatus.SENT,
    )
    assert anna_delivery.last_error == "451 4.2.2 <[erased]>: mailbox full, retried"
    assert (bob_delivery.email, bob_delivery.subscriber_id) == ("bob@example.com", world.bob)
    erased = [e for e in events if e.delivery_id == world.anna_delivery]
    assert len(erased) == 3
    for e in erased:
        assert (e.email, e.subscriber_id, e.ip, e.user_agent, e.meta, e.reason) == (
            None,
            None,
            None,
            None,
            None,
            None,
        )
        assert e.campaign_id == world.campaign
    assert sorted((e.type, e.url or "") for e in erased) == [
        (EventType.CLICK, ""),
        (EventType.CLICK, "https://shop.example/sale"),
        (EventType.OPEN, ""),
    ]
    (bobs,) = [e for e in events if e.delivery_id == world.bob_delivery]
    assert (bobs.email, bobs.ip, bobs.subscriber_id) == ("bob@example.com", "198.51.100.2", world.bob)
    # Only a hash of the address is kept, on the suppression list.
    assert (suppression.email, suppression.source) == (None, gdpr.ERASURE_SOURCE)

    async with db.session() as s:
        assert await suppressions.is_erased(s, "anna@example.com")
        assert not await suppressions.is_erased(s, "bob@example.com")
        with pytest.raises(DomainError) as refused:
            await suppressions.ensure_not_erased(s, "anna@example.com")
    assert refused.value.errors[0].code is ErrorCode.ERASED


async def test_an_erased_address_is_not_imported_again(gql: GQL, db: Database) -> None:
    world = await build(db)
    data(await gql(ERASE, {"i": {"id": to_global_id("Subscriber", world.anna)}}))

    async def chunks() -> Any:
        yield b"email,name\nANNA@example.com,Anna\nnew@example.com,New\n"

    async with db.transaction() as s:
        row = await imports.create_import(s, imports.ImportRequest("again.csv", [world.list_id]), chunks())
    done = await imports.run_import(db, row.id)
    assert done is not None
    assert (done.status, done.inserted, done.skipped) == (ImportStatus.FINISHED, 1, 1)
    async with db.session() as s:
        assert [(e.row, e.message) for e in await imports.import_errors(s, row.id, 10)] == [(2, "suppressed")]
        assert await subscribers.get_by_email(s, "anna@example.com") is None


async def test_an_erased_address_cannot_be_created_or_assigned_again(gql: GQL, db: Database) -> None:
    world = await build(db)
    data(await gql(ERASE, {"i": {"id": to_global_id("Subscriber", world.anna)}}))
    create = "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } userErrors { field code } } }"
    refused = data(await gql(create, {"i": {"email": "Anna@Example.com"}}))["createSubscriber"]
    assert refused == {"subscriber": None, "userErrors": [{"field": "email", "code": "ERASED"}]}
    other = data(await gql(create, {"i": {"email": "someone@example.com"}}))["createSubscriber"]["subscriber"]
    update = (
        "mutation($i: UpdateSubscriberInput!) { updateSubscriber(input: $i) { userErrors { field code } } }"
    )
    moved = data(await gql(update, {"i": {"id": other["id"], "email": "anna@example.com"}}))[
        "updateSubscriber"
    ]
    assert moved["userErrors"] == [{"field": "email", "code": "ERASED"}]


async def test_erasing_a_suppressed_address_keeps_the_suppression_without_the_address(
    gql: GQL, db: Database
) -> None:
    world = await build(db)
    async with db.transaction() as s:
        await suppressions.add_suppression(
            s,
            "anna@example.com",
            SuppressionReason.HARD_BOUNCE,
            detail="550 anna@example.com unknown",
            source="ses",
        )
    data(await gql(ERASE, {"i": {"id": to_global_id("Subscriber", world.anna)}}))
    async with db.session() as s:
        rows = (await s.execute(select(Suppression))).scalars().all()
    assert [(r.email, r.reason, r.source, r.detail) for r in rows] == [
        (None, SuppressionReason.HARD_BOUNCE, "ses", "550 [erased] unknown")
    ]


async def test_erasure_needs_a_write_role_and_an_existing_subscriber(gql: GQL, db: Database) -> None:
    world = await build(db)
    viewer = await make_key(db, Role.VIEWER, "viewer")
    anna_id = to_global_id("Subscriber", world.anna)
    assert (await gql(ERASE, {"i": {"id": anna_id}}, key=viewer))["errors"][0]["extensions"][
        "code"
    ] == "FORBIDDEN"
    assert (await gql(EXPORT, {"id": anna_id}, key=viewer))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    editor = await make_key(db, Role.EDITOR, "editor")
    missing = data(await gql(ERASE, {"i": {"id": to_global_id("Subscriber", 999_999)}}, key=editor))
    assert missing["eraseSubscriber"] == {
        "erasedId": None,
        "userErrors": [{"field": "id", "code": "SUBSCRIBER_NOT_FOUND"}],
    }
    malformed = data(await gql(ERASE, {"i": {"id": "x"}}, key=editor))
    assert malformed["eraseSubscriber"]["userErrors"] == [{"field": "id", "code": "INVALID_ID"}]
    assert (
        data(await gql(ERASE, {"i": {"id": anna_id}}, key=editor))["eraseSubscriber"]["erasedId"] == anna_id
    )
