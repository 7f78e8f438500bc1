"""The preference centre in headless Chromium, as a reader on a phone with JavaScript off would use it: leave
one list, join another, unsubscribe from everything, checking the database after each click; and a workspace's
branding (logo, name, accent, footer) under the page's Content-Security-Policy. The app runs behind uvicorn on
a loopback port, on SQLite and on PostgreSQL when configured."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, Route, async_playwright, expect

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from tests.e2e.browser import CHROMIUM_ARGS
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_workspace
from tests.support.live_server import live_server
from tests.support.preference_centre import C, U, X, seed, subscriptions_by_name

pytestmark = pytest.mark.e2e

UI_TIMEOUT_MS = 15_000
PHONE = {"width": 360, "height": 740}
LOGO = "https://cdn.brand-b.example/logo.png"
# A 1x1 PNG: the logo, answered by the browser's route (the machine has no network).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005ff02feb3b1fa7a0000000049454e44ae426082"
)


async def fits_the_screen(page: Page) -> None:
    """Nothing wider than the phone's screen: no sideways scrolling to reach a button."""
    for locator in (page.locator("main"), page.get_by_role("button").last):
        box = await locator.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box


async def test_leave_join_and_unsubscribe_from_everything(chromium: str, db: Database) -> None:
    delivery_id, subscriber_id, lists = await seed(db)

    async def subscriptions() -> dict[str, object]:
        return dict(await subscriptions_by_name(db, subscriber_id, lists))

    async with live_server(
        create_app(
            Settings(database_url=db.url, secret_key=TEST_SECRET),  # type: ignore[call-arg]
            Runtime(db=db, secret_key=TEST_SECRET, public_url="http://unused.invalid"),
        )
    ) as host:
        url = TrackingUrls(f"http://{host}", TokenSigner(TEST_SECRET)).unsubscribe(delivery_id)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    java_script_enabled=False, viewport=PHONE, is_mobile=True, has_touch=True
                )
                page = await context.new_page()
                await page.goto(url)
                await expect(page.get_by_role("heading", level=1)).to_have_text("Your email preferences")
                await expect(page.get_by_text("j…e@example.com")).to_be_visible()
                await fits_the_screen(page)
                # Opening the page changed nothing.
                assert await subscriptions() == {"Weekly news": C, "Offers": C, "Events": U, "Secret VIPs": C}

                await page.get_by_role("button", name="Leave Offers").click()
                await expect(page.get_by_role("status")).to_have_text(
                    "You left Offers.", timeout=UI_TIMEOUT_MS
                )
                assert await subscriptions() == {"Weekly news": C, "Offers": X, "Events": U, "Secret VIPs": C}
                await expect(page.get_by_role("button", name="Join Offers")).to_be_visible()

                await page.get_by_role("button", name="Join Podcasts").click()
                await expect(page.get_by_role("status")).to_have_text(
                    "You joined Podcasts.", timeout=UI_TIMEOUT_MS
                )
                assert await subscriptions() == {
                    "Weekly news": C,
                    "Offers": X,
                    "Events": U,
                    "Podcasts": C,
                    "Secret VIPs": C,
                }
                await expect(page.get_by_role("button", name="Leave Podcasts")).to_be_visible()

                await page.get_by_role("button", name="Unsubscribe from everything").click()
                await expect(page.get_by_role("status")).to_contain_text(
                    "unsubscribed from every list", timeout=UI_TIMEOUT_MS
                )
                assert await subscriptions() == {
                    "Weekly news": X,
                    "Offers": X,
                    "Events": X,
                    "Podcasts": X,
                    "Secret VIPs": X,
                }
                # Nothing left for this mail's own unsubscribe button to do.
                await expect(page.get_by_text("You are unsubscribed from the emails")).to_be_visible()
                await expect(page.get_by_role("button", name="Unsubscribe", exact=True)).to_have_count(0)
                await fits_the_screen(page)
            finally:
                await browser.close()


async def test_a_workspaces_branding_on_a_phone(chromium: str, db: Database) -> None:
    brand = await make_workspace(
        db,
        "brand-b",
        public_url="https://news.brand-b.example",
        branding={"name": "Brand B News", "logoUrl": LOGO, "accentColor": "#7b1fa2", "footer": "Brand B Ltd"},
    )
    with workspace_scope(brand):
        delivery_id, _, _ = await seed(db)
    async with live_server(
        create_app(
            Settings(database_url=db.url, secret_key=TEST_SECRET),  # type: ignore[call-arg]
            Runtime(db=db, secret_key=TEST_SECRET, public_url="http://unused.invalid"),
        )
    ) as host:
        url = TrackingUrls(f"http://{host}", TokenSigner(TEST_SECRET)).unsubscribe(delivery_id)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(
                    java_script_enabled=False, viewport=PHONE, is_mobile=True, has_touch=True
                )
                logo_requests: list[dict[str, str]] = []

                async def logo(route: Route) -> None:
                    logo_requests.append(route.request.headers)
                    await route.fulfill(body=PNG, content_type="image/png")

                await context.route(LOGO, logo)
                page = await context.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                await page.goto(url)
                await expect(page.get_by_role("heading", level=1)).to_have_text("Your email preferences")
                await expect(page.locator("header.site .name")).to_have_text("Brand B News")
                await expect(page.locator("footer.site")).to_have_text("Brand B Ltd")
                await expect(page.locator("header.site img")).to_be_visible()
                await expect(page.get_by_role("button", name="Join Podcasts")).to_have_css(
                    "background-color", "rgb(123, 31, 162)"
                )
                await fits_the_screen(page)
                # Loaded under the CSP, with no referrer: the page's URL is the reader's credential.
                assert len(logo_requests) == 1 and "referer" not in logo_requests[0], logo_requests
                assert errors == [], errors
            finally:
                await browser.close()
