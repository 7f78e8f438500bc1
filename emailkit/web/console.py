"""The emailkit console at `/`: a static single-page app (built from console/ into static/console/) that
signs in with an API key the user types and then speaks only the public GraphQL API, like any customer's
frontend. The page itself is unauthenticated and holds no data; the API authenticates every call."""

from __future__ import annotations

import base64
import gzip
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
        f"connect-src 'self'{sockets}; frame-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


# The compose page's preview frame. An email's HTML needs its inline styles and remote images, which the
# console's own CSP forbids (and a srcdoc frame would inherit that CSP), so it is shown in a document of its
# own with a CSP of its own: styles and images yes, no script but this one, no connection, no form. The
# console loads it in a sandbox without allow-same-origin (an opaque origin: it can read neither the key
# nor the API) and posts it the HTML that previewTemplate returned; DOMParser runs none of its scripts.
PREVIEW_SCRIPT = (
    'addEventListener("message",function(e){if(e.source!==parent||typeof e.data!=="string")return;'
    'var d=new DOMParser().parseFromString(e.data,"text/html");'
    "document.documentElement.replaceWith(document.adoptNode(d.documentElement))})"
)
PREVIEW_PAGE = (
    f'<!doctype html><html lang="en"><head><meta charset="utf-8"><script>{PREVIEW_SCRIPT}</script>'
    "</head><body></body></html>"
).encode()
_PREVIEW_HASH = base64.b64encode(hashlib.sha256(PREVIEW_SCRIPT.encode()).digest()).decode()
PREVIEW_CSP = (
    f"default-src 'none'; script-src 'sha256-{_PREVIEW_HASH}'; style-src 'unsafe-inline' http: https:; "
    "img-src data: http: https:; font-src data: http: https:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)


_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
# The entry and its stylesheet keep their names; the chunks that esbuild splits off are named by a hash of
# their content (console/build.mjs), so they can be cached for good.
_ASSET = re.compile(r"^(?:console|chunk-[A-Z0-9]+)\.(js|css)$")
_FOR_GOOD = "public, max-age=31536000, immutable"


def console_routes(static_dir: Path) -> list[Route]:
    """`/` and the console's bundle files, served from memory: they are small, and the first request for a
    file through StaticFiles starts a thread pool (hundreds of ms on a busy host), on the first load. Each is
    gzipped once (the bundle shrinks to about a third) and sent so to clients that accept it."""
    folder = static_dir / "console"
    files: dict[str, tuple[bytes, bytes, str]] = {}

    def read(name: str) -> tuple[bytes, bytes, str]:
        if name not in files:
            body = (folder / name).read_bytes()
            files[name] = (
                body,
                gzip.compress(body, 9, mtime=0),
                f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            )
        return files[name]

    async def console(request: Request) -> Response:
        body, _, _ = read("index.html")
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
        name = request.path_params["name"]
        kind = _ASSET.match(name)
        if kind is None or (name not in files and not (folder / name).is_file()):
            return Response(status_code=404)
        body, zipped, etag = read(name)
        headers = {
            "ETag": etag,
            "Cache-Control": _FOR_GOOD if name.startswith("chunk-") else "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = zipped
        return Response(body, media_type=_TYPES[kind.group(1)], headers=headers)

    async def preview(request: Request) -> Response:
        return HTMLResponse(
            PREVIEW_PAGE,
            headers={
                "Content-Security-Policy": PREVIEW_CSP,
                "X-Frame-Options": "SAMEORIGIN",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    return [
        Route("/", console, methods=["GET", "HEAD"]),
        Route("/static/console/preview.html", preview, methods=["GET", "HEAD"]),
        Route("/static/console/{name}", asset, methods=["GET", "HEAD"]),
    ]
