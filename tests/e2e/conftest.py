"""Fixtures of the browser tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.served import Server, serving


@pytest.fixture(autouse=True, scope="session")
def patient_expectations() -> None:
    """Every `expect` waits up to 30 s for its condition (Playwright's default is 5 s): on two cores shared with
    the rest of the suite, a live page can take longer than that to follow the server, and an assertion on a
    condition costs nothing more when the condition holds sooner."""
    expect.set_options(timeout=30_000)


@pytest.fixture
def chromium() -> str:
    """The browser's path; fails (never skips) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package with "
            "`apt-get update && apt-get install -y chromium` (or set EMAILKIT_E2E_CHROMIUM)"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Headless Chromium (a module may define its own `browser` to launch it otherwise)."""
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A real `emailkit serve` (SQLite, in tmp_path) and an ADMIN key of it."""
    async with serving(tmp_path) as served:
        yield served
