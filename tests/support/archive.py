"""Campaigns, a reader and her delivery, for the web view and public archive tests (written through the ORM)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus

READER_NAME = "Jane Doe"
READER_EMAIL = "jane.doe@example.com"
LINK = "https://shop.example.org/autumn"
# Personal in every way a template can be: name, address, an attribute, and the reader's own links.
BODY = (
    "<html><head><title>News</title></head><body>"
    "<p>Hello {{ subscriber.name }} ({{ subscriber.email }}), your plan is {{ subscriber.attributes.plan }}.</p>"
    f'<p><a href="{LINK}">Autumn sale</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ webview_url }}">Open in a browser</a></p>'
    "</body></html>"
)
MJML_BODY = (
    "<mjml><mj-body><mj-section><mj-column>"
    "<mj-text>Hello {{ subscriber.name }}, this is the autumn letter.</mj-text>"
    f'<mj-button href="{LINK}">Autumn sale</mj-button>'
    "</mj-column></mj-section></mj-body></mjml>"
)
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Reader:
    campaign_id: int
    subscriber_id: int
    delivery_id: int
    list_id: int


def campaign_row(name: str, *, days: int = 0, **values: Any) -> Campaign:
    """A sent, archived campaign (FINISHED) unless `values` say otherwise; `days` after START."""
    defaults: dict[str, Any] = {
        "subject": f"{name} for {{{{ subscriber.name }}}}",
        "from_email": "news@example.com",
        "from_name": "The News",
        "body": BODY,
        "format": ContentFormat.HTML,
        "status": CampaignStatus.FINISHED,
        "archive": True,
        "started_at": START + timedelta(days=days),
        "sent_count": 1,
    }
    return Campaign(name=name, **{**defaults, **values})


async def add_campaigns(db: Database, *campaigns: Campaign, workspace_id: int = 1) -> list[int]:
    with workspace_scope(workspace_id):
        async with db.transaction() as s:
            s.add_all(campaigns)
            await s.flush()
            return [c.id for c in campaigns]


async def add_reader(
    db: Database,
    campaign_id: int,
    *,
    workspace_id: int = 1,
    name: str = READER_NAME,
    email: str = READER_EMAIL,
) -> Reader:
    """A subscriber on the campaign's list with a SENT delivery of it."""
    with workspace_scope(workspace_id):
        async with db.transaction() as s:
            news = MailingList(name=f"News {campaign_id}")
            reader = Subscriber(email=email, name=name, attributes={"plan": "gold"})
            s.add_all([news, reader])
            await s.flush()
            s.add(CampaignList(campaign_id=campaign_id, list_id=news.id))
            s.add(Subscription(subscriber_id=reader.id, list_id=news.id, status=SubscriptionStatus.CONFIRMED))
            delivery = Delivery(
                campaign_id=campaign_id,
                subscriber_id=reader.id,
                email=email,
                status=DeliveryStatus.SENT,
                via_list_ids=[news.id],
                sent_at=START,
            )
            s.add(delivery)
            await s.flush()
            return Reader(campaign_id, reader.id, delivery.id, news.id)
