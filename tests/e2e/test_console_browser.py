"""The emailkit console (`/`) in a real browser against a real `emailkit serve`: sign in, create a list and a
campaign, start it and watch its progress bar reach 100% live, import a CSV with a bad row, a VIEWER key
that sees no action, and the API going away. Screenshots go to the artifacts folder `.ci/run` prints."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.e2e.console import UI_TIMEOUT_MS, graphql, new_page, shot_path, sign_in
from tests.e2e.served import Server

pytestmark = pytest.mark.e2e


RECIPIENTS = 25


async def _load_timing(page: Page) -> dict[str, int]:
    timing: dict[str, float] = await page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {fetchStart: n.fetchStart, responseEnd: n.responseEnd,"
        " bundleFetched: (performance.getEntriesByType('resource')"
        ".find(r => r.name.endsWith('/console.js')) || {}).responseEnd || 0,"
        " domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"
    )
    return {name: round(value) for name, value in timing.items()}


async def test_console_campaign_runs_live_and_import(browser: Browser, server: Server) -> None:
    problems: list[str] = []
    context, page = await new_page(browser, problems)

    response = await page.goto(server.base_url + "/")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "ws://127.0.0.1:" in csp
    await expect(page.get_by_label("API key")).to_be_visible(timeout=UI_TIMEOUT_MS)
    print("\nconsole first load on loopback (navigation timing, ms):", await _load_timing(page))
    # The same page again, its bundle now in the browser's cache, as a returning user opens it.
    await page.reload()
    await expect(page.get_by_label("API key")).to_be_visible(timeout=UI_TIMEOUT_MS)
    print("console reload on loopback (navigation timing, ms):", await _load_timing(page))
    await page.screenshot(path=shot_path("sign-in"))

    await page.get_by_label("API key").fill(server.api_key)
    await page.get_by_label("API key").press("Enter")
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.get_by_text("No campaign yet.")).to_be_visible()

    # A list made in the console, filled through the API as a signup form would.
    await page.get_by_role("link", name="New campaign").click()
    await page.get_by_label("List name").fill("Console readers")
    await page.get_by_role("button", name="Create list").click()
    await expect(page.get_by_text("List “Console readers” created.")).to_be_visible(timeout=UI_TIMEOUT_MS)
    lists = await graphql(server, "{ lists { edges { node { id name } } } }")
    list_id = next(e["node"]["id"] for e in lists["lists"]["edges"] if e["node"]["name"] == "Console readers")
    for n in range(RECIPIENTS):
        data = await graphql(
            server,
            "mutation($input: CreateSubscriberInput!) { createSubscriber(input: $input) { userErrors { code } } }",
            {"input": {"email": f"reader{n}@example.com", "listIds": [list_id]}},
        )
        assert data["createSubscriber"]["userErrors"] == []

    await page.get_by_label("Campaign name").fill("Winter news")
    await page.get_by_label("Subject").fill("Hello {{ subscriber.email }}")
    await page.get_by_label("From email").fill("news@example.com")
    await expect(page.get_by_label("Send to list")).to_have_value(list_id)
    await page.get_by_role("button", name="Create campaign").click()
    await expect(page.get_by_role("heading", name="Winter news")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # Started from the page, followed over the WebSocket: the same document from start to 100%.
    await page.evaluate("() => { window.__sameDocument = true; }")
    await page.get_by_role("button", name="Start").click()
    bar = page.locator("main .progress").first
    await expect(bar.locator(".pct")).to_have_text("100%", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .status")).to_have_text("FINISHED", timeout=UI_TIMEOUT_MS)
    assert await page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    # Once finished the page reads the campaign again: every delivery SENT, and no lifecycle button left.
    sent_rows = page.locator("table.deliveries tbody tr", has_text="SENT")
    await expect(sent_rows).to_have_count(RECIPIENTS, timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .actions button")).to_have_count(0)
    await expect(page.locator(".counter", has_text="Sent")).to_contain_text(str(RECIPIENTS))
    await page.screenshot(path=shot_path("campaign"), full_page=True)

    await page.get_by_role("link", name="Campaigns", exact=True).first.click()
    row = page.locator("table.campaigns tr", has_text="Winter news")
    await expect(row).to_contain_text("FINISHED", timeout=UI_TIMEOUT_MS)
    await expect(row.locator(".pct")).to_have_text("100%")
    await page.screenshot(path=shot_path("campaigns"))

    # A CSV with one bad address: the rest is imported, the bad row is named.
    await page.get_by_role("link", name="Imports").click()
    csv = (
        "email,name\n"
        + "".join(f"imported{n}@example.com,Person {n}\n" for n in range(40))
        + "not-an-email,Bad\n"
    )
    await page.get_by_label("CSV file").set_input_files(
        files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    await page.get_by_label("Add to list").select_option(label="Console readers")
    await page.get_by_role("button", name="Import").click()
    result = page.locator(".import-result")
    await expect(result.locator(".pct")).to_have_text("100%", timeout=UI_TIMEOUT_MS)
    await expect(result).to_contain_text("40 new", timeout=UI_TIMEOUT_MS)
    await expect(result.locator("table.row-errors tbody tr")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    await expect(result.locator("table.row-errors")).to_contain_text("42")
    await page.screenshot(path=shot_path("import"), full_page=True)

    # A phone's width: nothing wider than the screen.
    await page.set_viewport_size({"width": 375, "height": 740})
    await page.get_by_role("link", name="Campaigns", exact=True).first.click()
    await expect(page.get_by_role("link", name="Winter news")).to_be_visible(timeout=UI_TIMEOUT_MS)
    too_wide = await page.evaluate(
        "() => [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > 375.5)"
        ".map(e => `${e.tagName}.${e.className}: ${Math.round(e.getBoundingClientRect().right)}`)"
    )
    assert too_wide == [], too_wide
    await page.screenshot(path=shot_path("campaigns-375px"))
    await context.close()
    assert problems == []


async def test_console_viewer_sees_no_action_and_api_down_offers_retry(
    browser: Browser, server: Server
) -> None:
    created = await graphql(
        server,
        'mutation { createApiKey(input: {name: "watcher", role: VIEWER}) { key userErrors { code } } }',
    )
    viewer_key = created["createApiKey"]["key"]
    made = await graphql(
        server,
        'mutation { createList(input: {name: "L"}) { list { id } } }',
    )
    campaign = await graphql(
        server,
        "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } userErrors { code } } }",
        {
            "input": {
                "name": "Draft for viewers",
                "subject": "S",
                "fromEmail": "a@example.com",
                "listIds": [made["createList"]["list"]["id"]],
                "body": "<p>Hi</p>",
                "format": "HTML",
            }
        },
    )
    assert campaign["createCampaign"]["userErrors"] == []

    problems: list[str] = []
    context, page = await new_page(browser, problems)
    await sign_in(page, server, viewer_key)
    await expect(page.get_by_text("watcher (VIEWER)")).to_be_visible()
    await expect(page.get_by_role("link", name="Draft for viewers")).to_be_visible()
    await expect(page.get_by_role("link", name="New campaign")).to_have_count(0)
    await page.get_by_role("link", name="Draft for viewers").click()
    await expect(page.get_by_role("heading", name="Draft for viewers")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .actions button")).to_have_count(0)
    await expect(page.get_by_role("button", name="Start")).to_have_count(0)
    await page.screenshot(path=shot_path("viewer"))

    # The API goes away (every connection to /graphql refused): an error with a retry, never a blank page.
    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    await context.route("**/graphql", refuse)
    await page.get_by_role("link", name="Campaigns", exact=True).first.click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("cannot be reached", timeout=UI_TIMEOUT_MS)
    await page.screenshot(path=shot_path("api-down"))
    await context.unroute("**/graphql", refuse)
    await alert.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("link", name="Draft for viewers")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # The key revoked: HTTP 401 says so, and offers to sign in again.
    await graphql(
        server,
        "mutation($id: ID!) { revokeApiKey(input: {id: $id}) { userErrors { code } } }",
        {"id": await _key_id(server, "watcher")},
    )
    await page.reload()
    await expect(page.get_by_role("alert")).to_contain_text("refused", timeout=UI_TIMEOUT_MS)
    await context.close()
    assert problems == []


async def _key_id(server: Server, name: str) -> str:
    keys = await graphql(server, "{ apiKeys { edges { node { id name } } } }")
    return str(next(e["node"]["id"] for e in keys["apiKeys"]["edges"] if e["node"]["name"] == name))
