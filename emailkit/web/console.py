"""The emailkit console at `/`: a static single-page app (built from console/ into static/console/) that
signs in with an API key the user types and then speaks only the public GraphQL API, like any customer's
frontend. The page itself is unauthenticated and holds no data; the API authenticates every call."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

# A Host header as it may stand in a CSP source; anything else (a `;` would add directives) falls back to
# 'self' alone, which Chromium and Firefox already extend to same-origin WebSockets.
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def console_csp(host: str | None) -> str:
    sockets = f" ws://{host} wss://{host}" if host and _HOST.match(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def console_routes(static_dir: Path) -> list[Route]:
    index = static_dir / "console" / "index.html"
    page: list[bytes] = []

    async def console(request: Request) -> Response:
        if not page:
            page.append(index.read_bytes())
        return HTMLResponse(
            page[0],
            headers={
                "Content-Security-Policy": console_csp(request.headers.get("host")),
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                # The page names its bundle by a fixed path: a new release must be fetched, not cached.
                "Cache-Control": "no-cache",
            },
        )

    return [Route("/", console, methods=["GET", "HEAD"])]
