"""Campaigns with sent deliveries, created directly through the ORM, for the tracking tests."""

from __future__ import annotations

from dataclasses import dataclass

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus


@dataclass(frozen=True)
class SentDelivery:
    id: int
    campaign_id: int
    subscriber_id: int
    email: str
    list_ids: tuple[int, ...]


async def make_deliveries(
    db: Database, count: int, *, lists: int = 1, prefix: str = "reader"
) -> list[SentDelivery]:
    """One FINISHED campaign sent to `count` subscribers, each CONFIRMED on the campaign's `lists` lists and
    on one more list the campaign does not use."""
    async with db.transaction() as s:
        used = [MailingList(name=f"{prefix} list {i}") for i in range(lists)]
        other = MailingList(name=f"{prefix} other list")
        campaign = Campaign(
            name=f"{prefix} campaign",
            subject="Hello",
            from_email="news@example.com",
            status=CampaignStatus.FINISHED,
        )
        s.add_all([*used, other, campaign])
        await s.flush()
        s.add_all([CampaignList(campaign_id=campaign.id, list_id=lst.id) for lst in used])
        subscribers = [Subscriber(email=f"{prefix}{i}@example.com", name=f"Reader {i}") for i in range(count)]
        s.add_all(subscribers)
        await s.flush()
        s.add_all(
            Subscription(subscriber_id=sub.id, list_id=lst.id, status=SubscriptionStatus.CONFIRMED)
            for sub in subscribers
            for lst in [*used, other]
        )
        deliveries = [
            Delivery(
                campaign_id=campaign.id, subscriber_id=sub.id, email=sub.email, status=DeliveryStatus.SENT
            )
            for sub in subscribers
        ]
        s.add_all(deliveries)
        await s.flush()
        list_ids = tuple(lst.id for lst in used)
        return [SentDelivery(d.id, campaign.id, d.subscriber_id or 0, d.email, list_ids) for d in deliveries]
