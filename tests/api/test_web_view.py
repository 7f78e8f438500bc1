"""The web view of a mail, /v/<token>: the recipient's own message again, without counting an open; gone after
erasure; only for the token's delivery, in its workspace, while that workspace is active. And the link to it in
the mail: {{ webview_url }} and the campaign's "View in browser" line."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select, update
from starlette.applications import Starlette

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign
from emailkit.domain import workspaces
from emailkit.domain.audience import gdpr
from emailkit.domain.content.tracked_urls import PURPOSE_UNSUBSCRIBE, PURPOSE_WEBVIEW, TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.sending.messages import MessageBuilder
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from tests.support.archive import (
    LINK,
    MJML_BODY,
    READER_EMAIL,
    READER_NAME,
    Reader,
    add_campaigns,
    add_reader,
    campaign_row,
)
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_workspace

BASE = "http://testserver"


@dataclass
class Site:
    app: Starlette
    client: httpx.AsyncClient
    db: Database
    urls: TrackingUrls

    async def view(self, delivery_id: int) -> httpx.Response:
        return await self.client.get(_path(self.urls.web_view(delivery_id)))

    async def opens(self) -> list[Event]:
        await self.app.state.tracking.hits.flush()
        with all_workspaces():
            async with self.db.session() as s:
                return list((await s.scalars(select(Event).where(Event.type == EventType.OPEN))).all())


def _path(url: str) -> str:
    return url.removeprefix(BASE)


def framed_message(page: str) -> str:
    """The message inside the page's iframe srcdoc, unescaped."""
    found = re.search(r'srcdoc="([^"]*)"', page)
    assert found is not None, page
    return html.unescape(found.group(1))


@pytest.fixture
async def site(db: Database) -> AsyncIterator[Site]:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=BASE)  # type: ignore[call-arg]
    app = create_app(settings, Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield Site(app, client, db, TrackingUrls(BASE, TokenSigner(TEST_SECRET)))


@pytest.fixture
async def reader(db: Database) -> Reader:
    (campaign_id,) = await add_campaigns(db, campaign_row("Autumn letter", archive=False))
    return await add_reader(db, campaign_id)


async def test_shows_the_recipients_own_message_without_counting_an_open(site: Site, reader: Reader) -> None:
    response = await site.view(reader.delivery_id)
    assert response.status_code == 200
    page = response.text
    assert f"<h1>Autumn letter for {READER_NAME}</h1>" in page
    message = framed_message(page)
    assert f"Hello {READER_NAME} ({READER_EMAIL}), your plan is gold." in message
    # The mail's own links: the click-tracked product link, the reader's unsubscribe link and this page.
    assert site.urls.click(reader.delivery_id, LINK) in message
    assert site.urls.unsubscribe(reader.delivery_id) in message
    assert site.urls.web_view(reader.delivery_id) in message
    # No open pixel, and nothing counted.
    assert "/t/o/" not in page
    assert await site.opens() == []
    # Personal and secret: never cached, indexed or referred; nothing runs, nothing is loaded from elsewhere.
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-robots-tag"] == "noindex"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    assert '<base target="_blank">' in message


async def test_personal_data_as_it_is_now(site: Site, db: Database, reader: Reader) -> None:
    """Name and attributes are the subscriber's current ones; the address is the one the mail went to."""
    async with db.transaction() as s:
        await s.execute(
            update(Subscriber)
            .where(Subscriber.id == reader.subscriber_id)
            .values(name="Jane Smith", email="jane.smith@example.com", attributes={"plan": "silver"})
        )
    message = framed_message((await site.view(reader.delivery_id)).text)
    assert f"Hello Jane Smith ({READER_EMAIL}), your plan is silver." in message


async def test_still_there_after_unsubscribing(site: Site, db: Database, reader: Reader) -> None:
    async with db.transaction() as s:
        await s.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == reader.subscriber_id)
            .values(status=SubscriptionStatus.UNSUBSCRIBED)
        )
    response = await site.view(reader.delivery_id)
    assert response.status_code == 200
    assert f"Hello {READER_NAME}" in framed_message(response.text)


async def test_gone_after_erasure(site: Site, db: Database, reader: Reader) -> None:
    async with db.transaction() as s:
        await gdpr.erase_subscriber(s, reader.subscriber_id)
    response = await site.view(reader.delivery_id)
    assert response.status_code == 410
    assert READER_NAME not in response.text and READER_EMAIL not in response.text
    assert "no longer available" in response.text
    assert response.headers["cache-control"] == "no-store"


async def test_forged_altered_and_foreign_tokens_are_not_found(site: Site, reader: Reader) -> None:
    signer = TokenSigner(TEST_SECRET)
    token = signer.sign(PURPOSE_WEBVIEW, reader.delivery_id)
    body, mac = token.split(".")
    altered_mac = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    other = TokenSigner("another instance's secret").sign(PURPOSE_WEBVIEW, reader.delivery_id)
    # A valid token of this delivery for another purpose (its unsubscribe link) is not a web view token.
    unsubscribe = signer.sign(PURPOSE_UNSUBSCRIBE, reader.delivery_id)
    missing = signer.sign(PURPOSE_WEBVIEW, reader.delivery_id + 1000)
    for bad in (f"{body}.{altered_mac}", other, unsubscribe, missing, "test", "x" * 9000):
        response = await site.client.get(f"/v/{bad}")
        assert response.status_code == 404, bad
        assert READER_NAME not in response.text
        assert "Page not found" in response.text


async def test_in_the_deliverys_workspace_and_not_once_it_is_archived(site: Site, db: Database) -> None:
    other = await make_workspace(db, "brand-b", branding={"name": "Brand B News", "accentColor": "#aa3300"})
    (campaign_id,) = await add_campaigns(
        db, campaign_row("Brand B letter", archive=False), workspace_id=other
    )
    reader = await add_reader(db, campaign_id, workspace_id=other, name="Bea", email="bea@example.com")
    response = await site.view(reader.delivery_id)
    assert response.status_code == 200
    assert "Hello Bea (bea@example.com)" in framed_message(response.text)
    # The page wears that workspace's branding.
    assert "Brand B News" in response.text and "#aa3300" in response.text

    with all_workspaces():
        async with db.transaction() as s:
            await workspaces.archive_workspace(s, other)
    response = await site.view(reader.delivery_id)
    assert response.status_code == 404
    assert "Bea" not in response.text and "Brand B" not in response.text


async def test_the_view_in_browser_line_and_webview_url_in_the_mail(db: Database, reader: Reader) -> None:
    urls = TrackingUrls(BASE, TokenSigner(TEST_SECRET))
    builder = MessageBuilder(urls)
    pending = Pending(
        reader.delivery_id, reader.subscriber_id, READER_EMAIL, READER_NAME, {"plan": "gold"}, 0
    )
    web_view = urls.web_view(reader.delivery_id)
    async with db.session() as s:
        campaign = await s.get(Campaign, reader.campaign_id)
        assert campaign is not None
        plain = builder.build(await builder.compile(s, campaign), pending)
        campaign.web_view_link = True
        campaign.body = MJML_BODY.replace(
            "<mj-body>", "<mj-head><mj-preview>Autumn is here</mj-preview></mj-head><mj-body>"
        )
        campaign.format = ContentFormat.MJML
        lined = builder.build(await builder.compile(s, campaign), pending)
    # {{ webview_url }} in the template: the page's link, never click-tracked.
    assert plain.html is not None and f'href="{web_view}"' in plain.html
    assert "View in browser" not in plain.html
    # The campaign's line: after the hidden preheader, first thing the reader sees, in the text part too.
    assert lined.html is not None
    preheader = lined.html.index("Autumn is here")
    line = lined.html.index(f'<a href="{web_view}"')
    assert preheader < line < lined.html.index(f"Hello {READER_NAME}")
    assert lined.text.startswith(f"View in browser ({web_view})"), lined.text[:200]
    assert urls.click(reader.delivery_id, web_view) not in lined.html
    # The other links stay tracked, and the pixel is there (only the page leaves it out).
    assert urls.click(reader.delivery_id, LINK) in lined.html
    assert urls.open_pixel(reader.delivery_id) in lined.html


async def test_the_line_is_not_on_the_page_itself(site: Site, db: Database, reader: Reader) -> None:
    async with db.transaction() as s:
        await s.execute(update(Campaign).where(Campaign.id == reader.campaign_id).values(web_view_link=True))
    message = framed_message((await site.view(reader.delivery_id)).text)
    assert "View in browser" not in message
    assert f"Hello {READER_NAME}" in message


async def test_a_campaign_without_the_link_signs_none(db: Database, reader: Reader) -> None:
    """Content that never mentions webview_url costs no extra signature per message."""
    builder = MessageBuilder(TrackingUrls(BASE, TokenSigner(TEST_SECRET)))
    async with db.session() as s:
        campaign = await s.get(Campaign, reader.campaign_id)
        assert campaign is not None
        campaign.body = "<p>Hi {{ subscriber.name }}</p>"
        compiled = await builder.compile(s, campaign)
    assert not compiled.web_view


async def test_plain_text_alternative_gets_the_line(db: Database, reader: Reader) -> None:
    urls = TrackingUrls(BASE, TokenSigner(TEST_SECRET))
    builder = MessageBuilder(urls)
    pending = Pending(reader.delivery_id, reader.subscriber_id, READER_EMAIL, READER_NAME, {}, 0)
    async with db.session() as s:
        campaign = await s.get(Campaign, reader.campaign_id)
        assert campaign is not None
        campaign.web_view_link = True
        campaign.plain_text = "Hello {{ subscriber.name }}"
        message = builder.build(await builder.compile(s, campaign), pending)
    assert message.text == f"View in browser: {urls.web_view(reader.delivery_id)}\n\nHello {READER_NAME}"


async def test_workspace_two_rows_are_invisible_to_workspace_one(db: Database) -> None:
    other = await make_workspace(db, "brand-c")
    (campaign_id,) = await add_campaigns(db, campaign_row("C letter"), workspace_id=other)
    with workspace_scope(1):
        async with db.session() as s:
            assert await s.get(Campaign, campaign_id) is None
