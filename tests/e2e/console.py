"""What the console's browser tests share: the API beside the browser, pages that collect script and policy
errors, signing in, screenshots kept as CI artifacts, and polling for a condition."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.served import Server

UI_TIMEOUT_MS = 30_000
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("EMAILKIT_E2E_ARTIFACTS", ROOT / "artifacts" / "e2e"))

T = TypeVar("T")


def shot_path(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / f"console-{name}.png")


async def graphql(server: Server, query: str, variables: dict[str, Any] | None = None, key: str = "") -> Any:
    """The API as a customer's backend would call it (the server's ADMIN key unless `key` is given); a GraphQL
    error fails the test."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key or server.api_key}"},
        )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def until(what: str, check: Callable[[], Awaitable[T]]) -> T:
    """Poll until `check()` returns something truthy (a condition, not a timing)."""
    deadline = asyncio.get_running_loop().time() + UI_TIMEOUT_MS / 1000
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def watched_page(context: BrowserContext, problems: list[str]) -> Page:
    """A page of `context` whose script errors and CSP refusals go to `problems`."""
    page = await context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return page


async def new_page(browser: Browser, problems: list[str], **options: Any) -> tuple[BrowserContext, Page]:
    """A watched page in a fresh context (cold cache, no stored key)."""
    context = await browser.new_context(**options)
    return context, await watched_page(context, problems)


async def sign_in(page: Page, server: Server, key: str) -> None:
    await page.goto(server.base_url + "/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible(timeout=UI_TIMEOUT_MS)
