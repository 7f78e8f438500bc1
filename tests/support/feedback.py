"""A campaign already sent to a few subscribers, provider events about it, and its counters as recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.feedback import BounceType, CampaignStats, EventType
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus
from emailkit.db.tables.tenancy import Workspace
from emailkit.domain.ports.webhooks import NormalizedEvent

T0 = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)


async def add_workspace(db: Database, slug: str) -> int:
    """A new workspace; returns its id (read, not assumed: SQLite does not restart ids between tests)."""
    with all_workspaces():
        async with db.transaction() as s:
            row = Workspace(name=slug.title(), slug=slug)
            s.add(row)
            await s.flush()
            return row.id


@dataclass
class Seeded:
    campaign_id: int
    target_list: int
    other_list: int
    subscribers: dict[str, int]
    deliveries: dict[str, int]


async def seed_sent_campaign(
    db: Database,
    emails: Sequence[str],
    *,
    status: CampaignStatus = CampaignStatus.RUNNING,
    provider: str = "sendgrid",
    message_ids: dict[str, str] | None = None,
    sent_count: int | None = None,
) -> Seeded:
    """A campaign sent to `emails`: subscribers on a target list and on another list, SENT deliveries."""
    async with db.transaction() as s:
        target = MailingList(name="Target")
        other = MailingList(name="Other")
        campaign = Campaign(
            name="Spring",
            subject="Hello",
            from_email="news@example.org",
            status=status,
            recipients_count=len(emails),
            sent_count=len(emails) if sent_count is None else sent_count,
        )
        s.add_all([target, other, campaign])
        await s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=target.id))
        subscribers: dict[str, int] = {}
        deliveries: dict[str, int] = {}
        for email in emails:
            sub = Subscriber(email=email)
            s.add(sub)
            await s.flush()
            subscribers[email] = sub.id
            s.add_all(
                [
                    Subscription(
                        subscriber_id=sub.id, list_id=target.id, status=SubscriptionStatus.CONFIRMED
                    ),
                    Subscription(subscriber_id=sub.id, list_id=other.id, status=SubscriptionStatus.CONFIRMED),
                ]
            )
            d = Delivery(
                campaign_id=campaign.id,
                subscriber_id=sub.id,
                email=email,
                status=DeliveryStatus.SENT,
                provider=provider,
                provider_message_id=(message_ids or {}).get(email),
            )
            s.add(d)
            await s.flush()
            deliveries[email] = d.id
    return Seeded(campaign.id, target.id, other.id, subscribers, deliveries)


def ev(
    type_: EventType,
    email: str,
    *,
    at: datetime = T0,
    event_id: str | None = None,
    delivery: int | None = None,
    campaign: int | None = None,
    message_id: str | None = None,
    bounce: BounceType | None = None,
    url: str | None = None,
    provider: str = "sendgrid",
    custom: dict[str, str] | None = None,
) -> NormalizedEvent:
    """A provider's event as the webhook parsers hand it on, tagged with our delivery/campaign if given."""
    metadata = dict(custom or {})
    if delivery is not None:
        metadata["emailkit_delivery"] = str(delivery)
    if campaign is not None:
        metadata["emailkit_campaign"] = str(campaign)
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=provider,
        occurred_at=at,
        raw_event=type_.value.lower(),
        provider_event_id=event_id or f"{type_.value}-{email}-{at.isoformat()}-{url}",
        provider_message_id=message_id,
        bounce_type=bounce if type_ is EventType.BOUNCE else None,
        url=url,
        metadata=metadata,
    )


async def stats(db: Database, campaign_id: int) -> dict[str, int]:
    """The campaign's non-zero counters."""
    async with db.session() as s:
        row = await s.get(CampaignStats, campaign_id)
    if row is None:
        return {}
    names = (
        "delivered",
        "bounced",
        "complained",
        "opens",
        "unique_opens",
        "clicks",
        "unique_clicks",
        "unsubscribed",
    )
    return {n: getattr(row, n) for n in names if getattr(row, n)}


async def subscriber(db: Database, email: str) -> Subscriber:
    """The subscriber row with `email` (which must exist)."""
    async with db.session() as s:
        row = (await s.execute(select(Subscriber).where(Subscriber.email == email))).scalar_one()
    return row
