"""Every event emailkit announces is emitted where its change is made, in the same transaction: a subscriber
created, updated, unsubscribed (by the API, the preference centre, a link, a blocklisting) and erased; a
campaign's deliveries sent; a transactional message sent; an open, a click, a bounce and a complaint recorded.
Only the outbox rows are looked at here; their delivery is tested in test_webhooks_out.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import MailingList, SubscriberStatus
from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.tables.webhooks_out import WebhookMessage
from emailkit.domain.audience import gdpr, subscribers
from emailkit.domain.audience.preferences import scope as preference_scope
from emailkit.domain.feedback.recording import record_events
from emailkit.domain.feedback.types import IncomingEvent
from emailkit.domain.runtime import campaign_sender
from emailkit.domain.sending import lifecycle
from emailkit.domain.webhooks_out import emit
from tests.integration.test_webhooks_out import make_campaign, make_endpoint
from tests.support.transactional import outbox_runtime

EVERYTHING = [
    "delivery.sent",
    "delivery.failed",
    "delivery.bounced",
    "complaint",
    "open",
    "click",
    "subscriber.created",
    "subscriber.updated",
    "subscriber.unsubscribed",
    "subscriber.erased",
]


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    emit.subscriptions.invalidate()


async def announced(db: Database) -> list[tuple[str, dict[str, Any]]]:
    with all_workspaces():
        async with db.session() as s:
            rows = (await s.execute(select(WebhookMessage).order_by(WebhookMessage.id))).scalars()
            return [(r.event_type, json.loads(r.payload)["data"]) for r in rows]


async def test_subscriber_changes_are_announced(db: Database) -> None:
    await make_endpoint(db, "http://127.0.0.1:9/hooks", EVERYTHING)
    async with db.transaction() as s:
        news = MailingList(name="News")
        s.add(news)
        await s.flush()
        ada = await subscribers.create_subscriber(s, "ada@example.com", "Ada", list_ids=[news.id])
    async with db.transaction() as s:
        await subscribers.update_subscriber(s, ada.id, name="Ada L.")
    async with db.transaction() as s:
        await subscribers.unsubscribe_from_lists(s, [ada.id], [news.id])
        # Again: nothing changes, nothing is announced.
        await subscribers.unsubscribe_from_lists(s, [ada.id], [news.id])
    async with db.transaction() as s:
        bob = await subscribers.create_subscriber(s, "bob@example.com", list_ids=[news.id])
    async with db.transaction() as s:
        await subscribers.update_subscriber(s, bob.id, status=SubscriberStatus.BLOCKLISTED)
    async with db.transaction() as s:
        cyd = await subscribers.create_subscriber(s, "cyd@example.com", list_ids=[news.id])
    async with db.transaction() as s:
        await preference_scope.leave(s, [cyd.id], preference_scope.EVERY_LIST, cyd.created_at)
    async with db.transaction() as s:
        await gdpr.erase_subscriber(s, ada.id)

    types = [t for t, _ in await announced(db)]
    assert types == [
        "subscriber.created",
        "subscriber.updated",
        "subscriber.unsubscribed",
        "subscriber.created",
        "subscriber.updated",
        "subscriber.unsubscribed",
        "subscriber.created",
        "subscriber.unsubscribed",
        "subscriber.erased",
    ]
    unsubscribed = [d for t, d in await announced(db) if t == "subscriber.unsubscribed"]
    assert [(d["email"], d["source"], d["listIds"] is None) for d in unsubscribed] == [
        ("ada@example.com", "API", False),
        ("bob@example.com", "BLOCKLIST", True),
        ("cyd@example.com", "LINK", True),
    ]
    erased = [d for t, d in await announced(db) if t == "subscriber.erased"]
    assert erased and "email" not in erased[0]


@pytest.mark.parametrize("ledger", ["chosen", "portable"])
async def test_a_campaign_send_and_its_feedback_are_announced(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    campaign_id = await make_campaign(db, subscribers=3)
    await make_endpoint(db, "http://127.0.0.1:9/hooks", EVERYTHING)
    runtime = outbox_runtime(db, tmp_path)
    sender = campaign_sender(runtime)
    if ledger == "portable":
        from emailkit.domain.sending.ledger import PortableLedger

        sender.ledger = PortableLedger(db, provider_name="outbox", lease_seconds=sender.config.lease_seconds)
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=100)
    for batch_id in batch_ids:
        await sender.run_batch(batch_id)
    sent = [d for t, d in await announced(db) if t == "delivery.sent"]
    assert len(sent) == 3 and all(d["email"].endswith("@example.com") for d in sent)

    async with db.session() as s:
        deliveries = list(
            (await s.execute(select(Delivery.id).where(Delivery.status == DeliveryStatus.SENT))).scalars()
        )
    events = [
        IncomingEvent(EventType.OPEN, delivery_id=deliveries[0]),
        IncomingEvent(EventType.CLICK, delivery_id=deliveries[1], url="https://example.com/a"),
        IncomingEvent(EventType.BOUNCE, delivery_id=deliveries[2], bounce_type=BounceType.HARD),
        IncomingEvent(EventType.COMPLAINT, delivery_id=deliveries[0]),
    ]
    await record_events(db, events)
    feedback = [(t, d) for t, d in await announced(db) if not t.startswith(("delivery.sent", "campaign."))]
    assert [t for t, _ in feedback] == ["open", "click", "delivery.bounced", "complaint"]
    assert feedback[1][1]["url"] == "https://example.com/a"
    assert feedback[2][1]["bounceType"] == "HARD"
