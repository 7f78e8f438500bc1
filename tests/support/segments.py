"""Six subscribers with varied attributes, two lists, two campaigns, events and deliveries, for the segment tests,
and `attr()`, the attribute condition of a subscriber filter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, Delivery, DeliveryStatus
from emailkit.schema.relay import to_global_id

NOW = datetime.now(UTC)


@dataclass
class People:
    ids: dict[str, int]
    lists: dict[str, int]
    campaigns: dict[str, int]

    def list_gid(self, name: str) -> str:
        return to_global_id("MailingList", self.lists[name])

    def campaign_gid(self, name: str) -> str:
        return to_global_id("Campaign", self.campaigns[name])


ATTRIBUTES: dict[str, dict[str, Any]] = {
    "ana": {
        "city": "Berlin",
        "age": 30,
        "tags": ["vip", "beta"],
        "address": {"city": "Berlin", "zip": "10115"},
        "newsletter": True,
        "score": 4.5,
    },
    "bob": {
        "city": "berlin",
        "age": "30",
        "tags": "VIP customer",
        "address": {"city": "Paris"},
        "newsletter": False,
    },
    "cem": {"city": "Paris", "age": 45, "tags": [1, 2, 3], "nick": None},
    "dan": {},
    "eve": {"city": "Berlin", "age": 29.5, "signup": "2024-03-01", "tags": ["VIP"], "flags": [True]},
    "fay": {"city": "München", "Straße": "Hauptstraße 1", "address": {"city": ["Berlin"]}},
}


async def seed_people(db: Database) -> People:
    """Six subscribers with varied attributes, two lists, two campaigns, events and deliveries."""
    async with db.transaction() as s:
        ids: dict[str, int] = {}
        for n, (name, attrs) in enumerate(ATTRIBUTES.items()):
            row = Subscriber(
                email=f"{name}@example.com",
                name=name.capitalize() + " Example",
                attributes=attrs,
                status=SubscriberStatus.BLOCKLISTED if name == "cem" else SubscriberStatus.ENABLED,
                created_at=datetime(2024, 1 + n, 1, tzinfo=UTC),
            )
            s.add(row)
            await s.flush()
            ids[name] = row.id
        newsletter = MailingList(name="Newsletter", optin=OptIn.SINGLE)
        vip = MailingList(name="X", optin=OptIn.SINGLE)
        s.add_all([newsletter, vip])
        await s.flush()
        s.add_all(
            [
                Subscription(
                    subscriber_id=ids["ana"], list_id=newsletter.id, status=SubscriptionStatus.CONFIRMED
                ),
                Subscription(
                    subscriber_id=ids["bob"], list_id=newsletter.id, status=SubscriptionStatus.UNSUBSCRIBED
                ),
                Subscription(
                    subscriber_id=ids["cem"], list_id=newsletter.id, status=SubscriptionStatus.UNCONFIRMED
                ),
                Subscription(subscriber_id=ids["eve"], list_id=vip.id, status=SubscriptionStatus.CONFIRMED),
            ]
        )
        campaigns = {}
        for name in ("c1", "c2"):
            c = Campaign(
                name=name, subject="s", from_email="a@example.com", body="<p>x</p>", format=ContentFormat.HTML
            )
            s.add(c)
            await s.flush()
            campaigns[name] = c.id

        def event(who: str, kind: EventType, campaign: str, days_ago: float) -> dict[str, Any]:
            return {
                "subscriber_id": ids[who],
                "campaign_id": campaigns[campaign],
                "type": kind,
                "provider": "test",
                "email": f"{who}@example.com",
                "occurred_at": NOW - timedelta(days=days_ago),
                "recorded_at": NOW,
            }

        await s.execute(
            insert(Event),
            [
                event("ana", EventType.OPEN, "c1", 5),
                event("bob", EventType.OPEN, "c1", 40),
                event("eve", EventType.OPEN, "c1", 2),
                event("cem", EventType.CLICK, "c2", 1),
                event("fay", EventType.DELIVERED, "c1", 1),
            ],
        )
        for who, status, days_ago in (("dan", DeliveryStatus.SENT, 10), ("eve", DeliveryStatus.FAILED, 10)):
            s.add(
                Delivery(
                    campaign_id=campaigns["c1"],
                    subscriber_id=ids[who],
                    email=f"{who}@example.com",
                    status=status,
                    sent_at=NOW - timedelta(days=days_ago) if status is DeliveryStatus.SENT else None,
                )
            )
    return People(ids=ids, lists={"newsletter": newsletter.id, "x": vip.id}, campaigns=campaigns)


def attr(path: str, op: str, value: Any = ..., **extra: Any) -> dict[str, Any]:
    cond: dict[str, Any] = {"path": path, "op": op}
    if value is not ...:
        cond["value"] = value
    return {"attribute": cond, **extra}
