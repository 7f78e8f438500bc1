"""The web view of one delivery: its campaign's message rendered again for its recipient (``/v/<token>``).

What it shows, and why:

* The campaign's content (or its template) as it is now, with the address the mail went to (recorded on the
  delivery) and the subscriber's name and attributes **as they are now**. Recording every recipient's data on
  every delivery would copy the audience into the ledger on the send path (the hottest writes there are) and keep
  what a person later corrected or had removed; a page they open from their own mail shows them their data as we
  hold it. A campaign's content changes only while it is paused (or never sent), a template it uses at any time;
  the page follows either.
* The same links as the mail: click-tracked when the campaign tracks clicks (a click on the page is a click),
  the same unsubscribe link, but no open pixel: viewing the page is not counted as an open, whether or not the
  mail's own pixel was loaded. The "View in browser" line is left out (it would lead to the page itself).
* Nothing once the person is erased (or deleted): the delivery has lost its subscriber, the page answers 410.
  Unsubscribing changes nothing here: the mail was received and stays readable.

Runs in the delivery's workspace (:func:`emailkit.domain.tenancy.scope_of_row`); an archived workspace's pages
do not exist.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign, CampaignVariant, Delivery
from emailkit.domain.content.rendering import RenderError
from emailkit.domain.errors import DomainError
from emailkit.domain.public_site import PublicSite, site_in_scope
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.sending.messages import MessageBuilder
from emailkit.domain.tenancy import scope_of_row


class Unavailable(enum.Enum):
    # No such delivery (or not a campaign's), or its workspace is archived: 404.
    MISSING = "missing"
    # The recipient was erased or deleted: 410.
    GONE = "gone"


@dataclass(frozen=True)
class WebView:
    site: PublicSite
    subject: str
    # None when the message no longer renders (its template fails on the current data).
    html: str | None


async def web_view(
    db: Database, builder: MessageBuilder, delivery_id: int, *, default_base_url: str
) -> WebView | Unavailable:
    async with scope_of_row(db, Delivery, delivery_id) as found:
        if not found:
            return Unavailable.MISSING
        async with db.read_session() as session:
            row = (
                await session.execute(
                    select(Delivery, Campaign)
                    .join(Campaign, Campaign.id == Delivery.campaign_id)
                    .where(Delivery.id == delivery_id)
                )
            ).one_or_none()
            if row is None:
                return Unavailable.MISSING
            delivery, campaign = row
            site = await site_in_scope(session, campaign.workspace_id, default_base_url)
            if site is None:
                return Unavailable.MISSING
            subscriber = (
                None
                if delivery.subscriber_id is None
                else await session.get(Subscriber, delivery.subscriber_id)
            )
            if subscriber is None:
                return Unavailable.GONE
            # The A/B test variant this person got, as the ledger recorded it.
            variant = (
                None
                if delivery.variant_id is None
                else await session.get(CampaignVariant, delivery.variant_id)
            )
            try:
                compiled = await builder.compile(session, campaign, variant, web_page=True)
            except DomainError:
                return WebView(site, campaign.subject, None)
    pending = Pending(
        delivery.id, subscriber.id, delivery.email, subscriber.name, dict(subscriber.attributes or {}), 0
    )
    try:
        # Off the event loop: a render may take up to its time limit.
        message = await asyncio.to_thread(builder.build, compiled, pending)
    except RenderError:
        return WebView(site, campaign.subject, None)
    return WebView(site, message.subject, message.html)
