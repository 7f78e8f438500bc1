"""Headless Chromium for the browser tests.

Chromium is Debian's (`apt-get install -y chromium`), driven through Playwright's Python package with
`executable_path`: Playwright's own browser download is not used. A missing browser FAILS a test rather than
skipping it, on developer machines too: a skip would let CI go green without ever proving the pages work, and
`.ci/run` installs chromium itself. EMAILKIT_E2E_CHROMIUM may point at another Chromium-based browser.
"""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("EMAILKIT_E2E_CHROMIUM", "/usr/bin/chromium")
# As root in a container without a display, on a machine whose only network is loopback: the
# background-networking flags stop Chromium from reaching for Google's services at start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
