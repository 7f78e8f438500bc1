"""GraphiQL in a real browser against a real `emailkit serve`, with nothing loaded from another host
(the browser set-up is in :mod:`tests.e2e.browser`)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Request, Route, async_playwright, expect

from tests.e2e.browser import CHROMIUM_ARGS
from tests.e2e.served import Server

pytestmark = pytest.mark.e2e

UI_TIMEOUT_MS = 30_000


async def _run_in_ide(page: Page, operation: str) -> None:
    """Replace the editor's text the way a paste does, then press GraphiQL's run button."""
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.click()
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.insert_text(operation)
    await page.locator(".graphiql-execute-button").click()


def _origin(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


# `chromium` first: a missing browser fails before a server is started for nothing.
async def test_graphiql_runs_operations_with_no_other_host(chromium: str, server: Server) -> None:
    own_origin = _origin(server.base_url)
    seen: list[str] = []
    foreign: list[str] = []
    graphql_posts: list[Request] = []
    problems: list[str] = []

    async def only_own_origin(route: Route) -> None:
        url = route.request.url
        if _origin(url) == own_origin:
            await route.continue_()
        else:
            foreign.append(url)
            await route.abort()

    def on_request(request: Request) -> None:
        seen.append(request.url)
        if request.method == "POST" and request.url.endswith("/graphql"):
            graphql_posts.append(request)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.route("**/*", only_own_origin)
            page = await context.new_page()
            page.on("request", on_request)
            page.on("websocket", lambda ws: seen.append(ws.url))
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
            )

            await page.goto(f"{server.base_url}/graphql")
            await expect(page.locator(".graphiql-execute-button")).to_be_visible(timeout=UI_TIMEOUT_MS)

            await page.fill("#api-key", server.api_key)
            await page.press("#api-key", "Enter")
            await expect(page.locator("#api-key-status")).to_have_text("Key saved in this browser.")

            response = page.locator(".graphiql-response")
            await _run_in_ide(
                page,
                'mutation { createList(input: {name: "Made in GraphiQL"}) { list { name } userErrors { code } } }',
            )
            await expect(response).to_contain_text('"name": "Made in GraphiQL"', timeout=UI_TIMEOUT_MS)
            await expect(response).to_contain_text('"userErrors": []')

            await _run_in_ide(
                page, "{ viewer { name role } lists(first: 10) { totalCount edges { node { name } } } }"
            )
            await expect(response).to_contain_text('"name": "e2e"', timeout=UI_TIMEOUT_MS)
            await expect(response).to_contain_text('"role": "ADMIN"')
            await expect(response).to_contain_text('"totalCount": 1')

            # The key outlives a reload: it is kept in this browser's localStorage.
            await page.reload()
            await expect(page.locator("#api-key")).to_have_value(server.api_key)
        finally:
            await browser.close()

    assert foreign == [], f"the page reached for other hosts: {foreign}"
    # The CSP blocks some of these in the renderer before routing sees them; the request event still fires.
    assert [url for url in seen if _origin(url) != own_origin] == []
    assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in seen), seen
    operations = [r for r in graphql_posts if "createList" in (r.post_data or "")]
    assert operations, "the mutation was not sent over HTTP"
    assert operations[0].headers.get("authorization") == f"Bearer {server.api_key}"
    assert problems == []
