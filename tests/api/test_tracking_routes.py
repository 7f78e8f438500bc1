"""Public tracking routes over HTTP: open pixel, click redirect, one-click unsubscribe."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscription, SubscriptionStatus
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Delivery
from emailkit.domain.content.tracked_urls import (
    PURPOSE_CLICK,
    PURPOSE_OPEN,
    PURPOSE_UNSUBSCRIBE,
    TrackingUrls,
)
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from emailkit.web.tracking import PIXEL_GIF
from tests.support.environment import TEST_SECRET
from tests.tracking_data import SentDelivery, make_deliveries

BASE = "http://testserver"
NO_CACHE = "no-store, no-cache, must-revalidate, private"
UA = "Mozilla/5.0 (tracking test)"


@dataclass
class Site:
    app: Starlette
    client: httpx.AsyncClient
    db: Database
    urls: TrackingUrls
    signer: TokenSigner

    async def settle(self) -> None:
        """Write the buffered hits now (the routes answer before writing)."""
        await self.app.state.tracking.hits.flush()

    async def events(self, kind: EventType) -> list[Event]:
        await self.settle()
        async with self.db.session() as s:
            return list((await s.scalars(select(Event).where(Event.type == kind).order_by(Event.id))).all())


async def _site(db: Database, **settings_overrides: object) -> AsyncIterator[Site]:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=BASE, **settings_overrides)  # type: ignore[arg-type]
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE)
    app = create_app(settings, runtime)
    signer = TokenSigner(TEST_SECRET)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, headers={"User-Agent": UA}
        ) as client:
            yield Site(app, client, db, TrackingUrls(BASE, signer), signer)


@pytest.fixture
async def site(db: Database) -> AsyncIterator[Site]:
    async for s in _site(db):
        yield s


@pytest.fixture
async def anonymous_site(db: Database) -> AsyncIterator[Site]:
    async for s in _site(db, tracking_anonymous=True):
        yield s


def path(url: str) -> str:
    assert url.startswith(BASE)
    return url[len(BASE) :]


def tamper(token: str) -> str:
    """Flip one bit of the token's MAC."""
    body, _, mac = token.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[0] ^= 1
    return body + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


async def statuses(db: Database, delivery: SentDelivery) -> dict[int, SubscriptionStatus]:
    async with db.session() as s:
        rows = await s.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == delivery.subscriber_id
            )
        )
        return {list_id: status for list_id, status in rows}


# -- open pixel --------------------------------------------------------------------------------------------


def assert_pixel(resp: httpx.Response) -> None:
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/gif"
    assert resp.headers["cache-control"] == NO_CACHE
    assert resp.headers["pragma"] == "no-cache"
    assert resp.headers["expires"] == "0"
    assert resp.content == PIXEL_GIF


async def test_open_pixel_is_an_uncacheable_gif_and_records_the_open(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    resp = await site.client.get(path(site.urls.open_pixel(d.id)))
    assert_pixel(resp)
    # A well-formed 1x1 GIF with a transparent colour.
    assert PIXEL_GIF[:6] == b"GIF89a" and PIXEL_GIF[6:10] == b"\x01\x00\x01\x00" and PIXEL_GIF.endswith(b";")
    (event,) = await site.events(EventType.OPEN)
    assert (event.delivery_id, event.campaign_id, event.subscriber_id) == (
        d.id,
        d.campaign_id,
        d.subscriber_id,
    )
    assert event.ip == "203.0.113.7"
    assert event.user_agent == UA


async def test_a_bad_pixel_token_gets_the_same_gif_and_records_nothing(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    token = site.urls.open_pixel(d.id).rsplit("/", 1)[1].removesuffix(".gif")
    click_token = site.signer.sign(PURPOSE_CLICK, d.id, "https://example.com/")
    for bad in (tamper(token), "garbage", "", click_token, site.signer.sign(PURPOSE_OPEN, "x")):
        assert_pixel(await site.client.get(f"/t/o/{bad}.gif"))
    assert await site.events(EventType.OPEN) == []


async def test_head_on_the_pixel_answers_without_counting_an_open(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    resp = await site.client.head(path(site.urls.open_pixel(d.id)))
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == NO_CACHE
    assert await site.events(EventType.OPEN) == []


# -- click redirect ----------------------------------------------------------------------------------------


async def test_click_redirects_to_the_signed_url_and_records_the_click(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    target = "https://shop.example.com/sale?utm_source=mail&x=1#top"
    resp = await site.client.get(path(site.urls.click(d.id, target)))
    assert resp.status_code == 302
    assert resp.headers["location"] == target
    (event,) = await site.events(EventType.CLICK)
    assert event.url == target
    assert (event.delivery_id, event.campaign_id, event.subscriber_id) == (
        d.id,
        d.campaign_id,
        d.subscriber_id,
    )
    assert event.ip == "203.0.113.7"
    assert event.user_agent == UA


async def test_a_tampered_click_token_is_404_and_never_redirects(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    token = site.urls.click(d.id, "https://example.com/a").rsplit("/", 1)[1]
    # Same MAC, another target: the payload is readable, so this is what an attacker would try.
    swapped_body = base64.urlsafe_b64encode(f"{d.id}\x1fhttps://evil.example/".encode()).decode().rstrip("=")
    swapped = swapped_body + "." + token.partition(".")[2]
    open_token = site.signer.sign(PURPOSE_OPEN, d.id)
    unsubscribe_token = site.signer.sign(PURPOSE_UNSUBSCRIBE, d.id)
    for bad in (tamper(token), swapped, "nope", token + "x", open_token, unsubscribe_token, ""):
        resp = await site.client.get(f"/t/c/{bad}")
        assert resp.status_code == 404, bad
        assert "location" not in resp.headers
    assert await site.events(EventType.CLICK) == []


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/",
        "/relative",
        "https://",
    ],
)
async def test_a_signed_non_http_target_is_refused(site: Site, target: str) -> None:
    (d,) = await make_deliveries(site.db, 1)
    resp = await site.client.get(f"/t/c/{site.signer.sign(PURPOSE_CLICK, d.id, target)}")
    assert resp.status_code == 404
    assert "location" not in resp.headers
    assert await site.events(EventType.CLICK) == []


async def test_a_target_with_spaces_and_non_ascii_is_percent_encoded(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    target = "https://example.com/caf\u00e9 menu?q=a b\r\nSet-Cookie: x=1"
    resp = await site.client.get(f"/t/c/{site.signer.sign(PURPOSE_CLICK, d.id, target)}")
    assert resp.status_code == 302
    assert resp.headers["location"] == "https://example.com/caf%C3%A9%20menu?q=a%20b%0D%0ASet-Cookie:%20x=1"
    assert "set-cookie" not in resp.headers
    (event,) = await site.events(EventType.CLICK)
    assert event.url == target


async def test_other_methods_and_paths_under_t(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    assert (await site.client.post(path(site.urls.click(d.id, "https://example.com/")))).status_code == 405
    assert (await site.client.get("/t/unknown")).status_code == 404
    assert await site.events(EventType.CLICK) == []


# -- privacy mode ------------------------------------------------------------------------------------------


async def test_privacy_mode_keeps_the_campaign_and_url_but_not_the_person(anonymous_site: Site) -> None:
    site = anonymous_site
    (d,) = await make_deliveries(site.db, 1)
    assert (await site.client.get(path(site.urls.open_pixel(d.id)))).status_code == 200
    assert (await site.client.get(path(site.urls.click(d.id, "https://example.com/x")))).status_code == 302
    (opened,) = await site.events(EventType.OPEN)
    (clicked,) = await site.events(EventType.CLICK)
    for event in (opened, clicked):
        assert event.campaign_id == d.campaign_id
        assert (event.subscriber_id, event.delivery_id, event.email, event.ip, event.user_agent) == (
            None,
            None,
            None,
            None,
            None,
        )
    assert clicked.url == "https://example.com/x"


# -- unsubscribe -------------------------------------------------------------------------------------------


async def test_one_click_post_unsubscribes_from_the_campaign_lists_and_is_idempotent(site: Site) -> None:
    d, neighbour = await make_deliveries(site.db, 2, lists=2)
    url = path(site.urls.unsubscribe(d.id))
    for _ in range(2):
        resp = await site.client.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 200
        assert "unsubscribed" in resp.text
        after = await statuses(site.db, d)
        assert {after[i] for i in d.list_ids} == {SubscriptionStatus.UNSUBSCRIBED}
        (other_list,) = set(after) - set(d.list_ids)
        # Lists the campaign was not sent to are left alone.
        assert after[other_list] is SubscriptionStatus.CONFIRMED
    assert set((await statuses(site.db, neighbour)).values()) == {SubscriptionStatus.CONFIRMED}
    (event,) = await site.events(EventType.UNSUBSCRIBE)
    assert (event.delivery_id, event.campaign_id, event.subscriber_id) == (
        d.id,
        d.campaign_id,
        d.subscriber_id,
    )


async def test_multipart_one_click_post_is_accepted(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    resp = await site.client.post(
        path(site.urls.unsubscribe(d.id)), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert resp.status_code == 200
    assert set((await statuses(site.db, d)).values()) >= {SubscriptionStatus.UNSUBSCRIBED}


async def test_get_shows_a_confirmation_form_and_changes_nothing(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1, prefix="jane")
    url = path(site.urls.unsubscribe(d.id))
    resp = await site.client.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in resp.text
    assert '<button type="submit" class="danger">Unsubscribe</button>' in resp.text
    assert "j…0@example.com" in resp.text
    assert "jane0@example.com" not in resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    # Self-contained: nothing is loaded from anywhere.
    assert "src=" not in resp.text and "<link" not in resp.text
    assert set((await statuses(site.db, d)).values()) == {SubscriptionStatus.CONFIRMED}
    assert await site.events(EventType.UNSUBSCRIBE) == []

    # The form posts back to the page's own URL, which is what a browser does with no action attribute.
    assert (await site.client.post(url, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    again = await site.client.get(url)
    assert again.status_code == 200
    assert "You are unsubscribed from the emails this message was sent through" in again.text
    assert 'name="List-Unsubscribe"' not in again.text


async def test_the_page_escapes_what_it_shows(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    async with site.db.transaction() as s:
        delivery = await s.get(Delivery, d.id)
        assert delivery is not None
        delivery.email = "a<script>alert(1)</script>b@ex<b>.com"
    resp = await site.client.get(path(site.urls.unsubscribe(d.id)))
    assert resp.status_code == 200
    assert "<script>" not in resp.text and "<b>" not in resp.text
    assert "ex&lt;b&gt;.com" in resp.text


async def test_a_forged_or_unknown_unsubscribe_token_is_404(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    token = site.urls.unsubscribe(d.id).rsplit("/", 1)[1]
    forged = [
        tamper(token),
        "nope",
        site.signer.sign(PURPOSE_CLICK, d.id, "https://x.example/"),
        site.signer.sign(PURPOSE_OPEN, d.id),
    ]
    unknown = site.signer.sign(PURPOSE_UNSUBSCRIBE, d.id + 1000)
    for bad in [*forged, unknown]:
        got = await site.client.get(f"/u/{bad}")
        assert got.status_code == 404
        assert "not valid" in got.text
        posted = await site.client.post(f"/u/{bad}", content=b"List-Unsubscribe=One-Click")
        assert posted.status_code == 404
    assert set((await statuses(site.db, d)).values()) == {SubscriptionStatus.CONFIRMED}
    assert await site.events(EventType.UNSUBSCRIBE) == []


async def test_no_api_key_is_needed_and_none_is_looked_at(site: Site) -> None:
    (d,) = await make_deliveries(site.db, 1)
    headers = {"Authorization": "Bearer not-a-real-key"}
    assert (await site.client.get(path(site.urls.open_pixel(d.id)), headers=headers)).status_code == 200
    assert (
        await site.client.get(path(site.urls.click(d.id, "https://e.example/")), headers=headers)
    ).status_code == 302
    assert (await site.client.get(path(site.urls.unsubscribe(d.id)), headers=headers)).status_code == 200
