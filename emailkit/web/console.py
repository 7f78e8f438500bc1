"""The emailkit console at `/`: a static single-page app (built from console/ into static/console/) that
signs in with an API key the user types and then speaks only the public GraphQL API, like any customer's
frontend. The page itself is unauthenticated and holds no data; the API authenticates every call."""

from __future__ import annotations

import hashlib
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


_ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def console_routes(static_dir: Path) -> list[Route]:
    """`/` and the console's two bundle files, served from memory: they are small, and the first request for
    a file through StaticFiles starts a thread pool (hundreds of ms on a busy host), on the first load."""
    folder = static_dir / "console"
    files: dict[str, tuple[bytes, str]] = {}

    def read(name: str) -> tuple[bytes, str]:
        if name not in files:
            body = (folder / name).read_bytes()
            files[name] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        return files[name]

    async def console(request: Request) -> Response:
        body, _ = read("index.html")
        return HTMLResponse(
            body,
            headers={
                "Content-Security-Policy": console_csp(request.headers.get("host")),
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                # The page names its bundle by a fixed path: a new release must be fetched, not cached.
                "Cache-Control": "no-cache",
            },
        )

    async def asset(request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[-1]
        body, etag = read(name)
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=_ASSETS[name], headers=headers)

    return [
        Route("/", console, methods=["GET", "HEAD"]),
        *(Route(f"/static/console/{name}", asset, methods=["GET", "HEAD"]) for name in _ASSETS),
    ]
