"""Fixtures of the browser tests."""

from __future__ import annotations

import os

import pytest

from tests.e2e.browser import CHROMIUM


@pytest.fixture
def chromium() -> str:
    """The browser's path; fails (never skips) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package with "
            "`apt-get update && apt-get install -y chromium` (or set EMAILKIT_E2E_CHROMIUM)"
        )
    return CHROMIUM
