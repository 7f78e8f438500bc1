"""The public archive and the web view in headless Chromium, on a phone: the list and a campaign page fit the
screen (no sideways scrolling), the framed message renders under the pages' Content-Security-Policy, and the web
view shows the reader her own message without counting an open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Locator, Page, Route, async_playwright, expect
from sqlalchemy import select

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import Event, EventType
from emailkit.domain import workspaces
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from tests.e2e.browser import CHROMIUM_ARGS
from tests.support.archive import LINK, MJML_BODY, READER_NAME, add_campaigns, add_reader, campaign_row
from tests.support.environment import TEST_SECRET
from tests.support.live_server import live_server

pytestmark = pytest.mark.e2e

PHONE = {"width": 360, "height": 740}
# Where the app's own mail links point: answered by the browser's route, never reached.
UNUSED = "http://unused.invalid"
# A folder to keep screenshots of the pages in, for a person to look at (unset: none taken).
SCREENSHOTS = os.environ.get("EMAILKIT_E2E_SCREENSHOTS")
LONG_SUBJECT = "An unusually long subject line without many breaks: Supercalifragilisticexpialidocious-news-{{ subscriber.name }}"


async def fits_the_screen(page: Page) -> None:
    """Nothing wider than the phone's screen: the page never scrolls sideways."""
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
    )
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths


@pytest.fixture
async def phone(chromium: str) -> AsyncIterator[tuple[Browser, list[str]]]:
    """A browser, and the console errors of its pages (a CSP violation would be one)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser, []
        finally:
            await browser.close()


async def opens_in_a_new_tab(page: Page, link: Locator, expected: str) -> None:
    """A link in the sandboxed message opens a tab of its own, at `expected` (a prefix), with no referrer."""
    seen: list[dict[str, str]] = []

    async def answer(route: Route) -> None:
        seen.append(route.request.headers)
        await route.fulfill(body="<p>elsewhere</p>", content_type="text/html")

    await page.context.route(f"{expected}**", answer)
    async with page.context.expect_page() as opened:
        await link.click()
    tab = await opened.value
    await tab.wait_for_load_state()
    assert tab.url.startswith(expected), tab.url
    assert seen and all("referer" not in headers for headers in seen), seen
    await tab.close()
    await page.context.unroute(f"{expected}**")


async def new_page(browser: Browser, errors: list[str]) -> Page:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = await context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return page


async def test_archive_and_web_view_on_a_phone(phone: tuple[Browser, list[str]], db: Database) -> None:
    browser, errors = phone
    with all_workspaces():
        async with db.transaction() as s:
            await workspaces.update_workspace(
                s,
                1,
                workspaces.WorkspaceInput(
                    branding={
                        "name": "The Example Gazette",
                        "accentColor": "#0b7a75",
                        "footer": "The Example Gazette\n1 Long Street, Exampleton",
                    }
                ),
            )
    mjml = {"body": MJML_BODY, "format": ContentFormat.MJML}
    first, _, _ = await add_campaigns(
        db,
        campaign_row("Spring letter", days=0, **mjml),
        campaign_row("Summer letter", days=90, **mjml),
        campaign_row("Long", days=180, subject=LONG_SUBJECT, **mjml),
    )
    reader = await add_reader(db, first)
    app = create_app(
        Settings(database_url=db.url, secret_key=TEST_SECRET),  # type: ignore[call-arg]
        Runtime(db=db, secret_key=TEST_SECRET, public_url=UNUSED),
    )
    async with app.router.lifespan_context(app), live_server(app) as host:
        page = await new_page(browser, errors)

        await page.goto(f"http://{host}/archive/default")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Email archive")
        await expect(page.get_by_text("The Example Gazette").first).to_be_visible()
        await expect(page.get_by_role("listitem")).to_have_count(3)
        await fits_the_screen(page)
        if SCREENSHOTS:
            await page.screenshot(path=f"{SCREENSHOTS}/list.png", full_page=True)

        await page.get_by_role("link", name="Spring letter for Subscriber").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Spring letter for Subscriber")
        message = page.frame_locator("iframe.message")
        await expect(message.get_by_text("Hello Subscriber, this is the autumn letter.")).to_be_visible()
        await expect(message.get_by_role("link", name="Autumn sale")).to_be_visible()
        await fits_the_screen(page)
        if SCREENSHOTS:
            await page.screenshot(path=f"{SCREENSHOTS}/campaign.png", full_page=True)
        await opens_in_a_new_tab(page, message.get_by_role("link", name="Autumn sale"), LINK)
        await page.get_by_role("link", name="All emails").click()
        await expect(page.get_by_role("listitem")).to_have_count(3)

        await page.get_by_role("link", name="Supercalifragilisticexpialidocious", exact=False).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(
            "Supercalifragilisticexpialidocious"
        )
        await fits_the_screen(page)

        web_view = TrackingUrls(f"http://{host}", TokenSigner(TEST_SECRET)).web_view(reader.delivery_id)
        await page.goto(web_view)
        await expect(page.get_by_role("heading", level=1)).to_have_text(f"Spring letter for {READER_NAME}")
        message = page.frame_locator("iframe.message")
        await expect(message.get_by_text(f"Hello {READER_NAME}, this is the autumn letter.")).to_be_visible()
        await fits_the_screen(page)
        if SCREENSHOTS:
            await page.screenshot(path=f"{SCREENSHOTS}/webview.png", full_page=True)
        # The mail's own tracked link: a click on the page is a click.
        await opens_in_a_new_tab(page, message.get_by_role("link", name="Autumn sale"), f"{UNUSED}/t/c/")
        # Everything the page and its frame load has been loaded: no open was counted.
        await page.wait_for_load_state("networkidle")
        await app.state.tracking.hits.flush()
        with all_workspaces():
            async with db.session() as s:
                assert (await s.scalars(select(Event).where(Event.type == EventType.OPEN))).all() == []
    # The one thing refused: MJML's web font stylesheet, from a third party that would learn who reads what.
    assert [e for e in errors if "https://fonts.googleapis.com/" not in e] == []
