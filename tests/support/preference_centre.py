"""Jane, a reader of the "news" campaign, with public, private, single and double opt-in lists around her."""

from __future__ import annotations

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Visibility,
)
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus

C, U, X = SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNCONFIRMED, SubscriptionStatus.UNSUBSCRIBED


async def seed(db: Database) -> tuple[int, int, dict[str, int]]:
    """(delivery id, subscriber id, list ids by name): the campaign went to "Weekly news"; Jane is on it, on
    "Offers" and the private "Secret VIPs", unconfirmed on the double opt-in "Events", not on "Podcasts"."""
    async with db.transaction() as s:
        lists = {
            "Weekly news": MailingList(
                name="Weekly news", visibility=Visibility.PUBLIC, description="Fridays"
            ),
            "Offers": MailingList(name="Offers", visibility=Visibility.PUBLIC),
            "Events": MailingList(name="Events", visibility=Visibility.PUBLIC, optin=OptIn.DOUBLE),
            "Podcasts": MailingList(name="Podcasts", visibility=Visibility.PUBLIC),
            "Secret VIPs": MailingList(name="Secret VIPs", visibility=Visibility.PRIVATE),
        }
        jane = Subscriber(email="jane.doe@example.com", name="Jane")
        campaign = Campaign(
            name="News", subject="News", from_email="news@example.com", status=CampaignStatus.FINISHED
        )
        s.add_all([*lists.values(), jane, campaign])
        await s.flush()
        ids = {name: row.id for name, row in lists.items()}
        s.add(CampaignList(campaign_id=campaign.id, list_id=ids["Weekly news"]))
        s.add_all(
            Subscription(subscriber_id=jane.id, list_id=ids[name], status=status)
            for name, status in [("Weekly news", C), ("Offers", C), ("Events", U), ("Secret VIPs", C)]
        )
        delivery = Delivery(
            campaign_id=campaign.id,
            subscriber_id=jane.id,
            email=jane.email,
            status=DeliveryStatus.SENT,
            via_list_ids=[ids["Weekly news"]],
        )
        s.add(delivery)
        await s.flush()
        return delivery.id, jane.id, ids


async def subscriptions_by_name(
    db: Database, subscriber_id: int, lists: dict[str, int]
) -> dict[str, SubscriptionStatus]:
    names = {v: k for k, v in lists.items()}
    async with db.session() as s:
        rows = await s.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == subscriber_id
            )
        )
        return {names[list_id]: status for list_id, status in rows}
