"""Fixtures of the browser tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM
from tests.e2e.served import Server, serving


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
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A real `emailkit serve` (SQLite, in tmp_path) and an ADMIN key of it."""
    async with serving(tmp_path) as served:
        yield served
