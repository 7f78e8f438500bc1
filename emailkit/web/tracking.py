"""Public tracking routes: open pixel, click redirect and unsubscribe. No API key: signed tokens are the
authentication.

``/t/o/<token>.gif`` and ``/t/c/<token>`` are the hottest paths of the service (every open and every click of
every campaign), so they are answered by a raw ASGI handler ahead of Starlette's routing and the other
middleware: verify the token, queue the hit in memory, answer. The database write happens later, in batches
(:class:`emailkit.domain.feedback.hitbuffer.HitBuffer`). Unsubscribes are rare and must take effect before the answer,
so ``/u/<token>`` (:mod:`emailkit.web.preferences`) is an ordinary Starlette route that writes synchronously.

No workspace is in scope here and none is needed: a token names a delivery, and the hit writer records each hit
in its delivery's workspace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from emailkit.db.tables.feedback import EventType
from emailkit.domain.content.tracked_urls import PURPOSE_CLICK, PURPOSE_OPEN
from emailkit.domain.feedback.hitbuffer import HitBuffer
from emailkit.domain.feedback.hits import Hit, HitWriter
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.web.preferences import PreferenceCentre

# A 1x1 transparent GIF89a: 2-colour palette, graphic control extension marking index 0 transparent.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00"
    b"\x02\x02D\x01\x00;"
)
_NO_CACHE = b"no-store, no-cache, must-revalidate, private"
_PIXEL_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"image/gif"),
        (b"content-length", str(len(PIXEL_GIF)).encode()),
        (b"cache-control", _NO_CACHE),
        (b"pragma", b"no-cache"),
        (b"expires", b"0"),
    ],
}
_PIXEL_BODY = {"type": "http.response.body", "body": PIXEL_GIF}
_NOT_FOUND_BODY = b"Not found\n"
_NOT_FOUND_START = {
    "type": "http.response.start",
    "status": 404,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_NOT_FOUND_BODY)).encode()),
        (b"cache-control", _NO_CACHE),
    ],
}
_NOT_FOUND = {"type": "http.response.body", "body": _NOT_FOUND_BODY}
_NOT_ALLOWED_START = {
    "type": "http.response.start",
    "status": 405,
    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
}
_EMPTY = {"type": "http.response.body", "body": b""}

# User agents beyond this are cut: they are stored per hit and nothing legitimate is longer.
MAX_USER_AGENT = 512
# Printable ASCII stays as it is in a Location header; anything else (spaces, controls, non-ASCII) is
# percent-encoded, so a signed URL can never inject a header or break the response.
_LOCATION_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def redirect_target(url: str) -> bytes | None:
    """The Location header value for a signed click URL, or None when it is not an absolute http(s) URL."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if url.isascii() and url.isprintable() and " " not in url:
        # The common case, and on the hot path: nothing to encode.
        return url.encode("ascii")
    return quote(url, safe=_LOCATION_SAFE).encode("ascii")


class TrackingHits:
    """The raw ASGI handler of ``/t/...``: open pixel and click redirect."""

    def __init__(self, signer: TokenSigner, hits: HitBuffer[Hit], *, anonymous: bool) -> None:
        self.signer = signer
        self.hits = hits
        self.anonymous = anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method != "GET" and method != "HEAD":
            await _not_allowed(send)
        elif path.startswith("/t/o/"):
            await self._open(path, method, scope, send)
        elif path.startswith("/t/c/"):
            await self._click(path, method, scope, send)
        else:
            await _not_found(send)

    async def _open(self, path: str, method: str, scope: Scope, send: Send) -> None:
        # Every token, valid or not, gets the same pixel: the answer never reveals validity. HEAD (link
        # checkers, proxies probing) is answered but is not an open.
        if method == "GET" and path.endswith(".gif"):
            parts = self.signer.verify(PURPOSE_OPEN, path[5:-4])
            if parts is not None and len(parts) == 1 and _is_id(parts[0]):
                self._record(EventType.OPEN, int(parts[0]), None, scope)
        await send(_PIXEL_START)
        await send(_PIXEL_BODY)

    async def _click(self, path: str, method: str, scope: Scope, send: Send) -> None:
        parts = self.signer.verify(PURPOSE_CLICK, path[5:])
        if parts is None or len(parts) != 2 or not _is_id(parts[0]):
            await _not_found(send)
            return
        delivery_id, url = parts
        location = redirect_target(url)
        if location is None:
            await _not_found(send)
            return
        if method == "GET":
            self._record(EventType.CLICK, int(delivery_id), url, scope)
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", location),
                    (b"content-length", b"0"),
                    (b"cache-control", _NO_CACHE),
                    # The tracking URL carries a token: the destination has no business seeing it.
                    (b"referrer-policy", b"no-referrer"),
                ],
            }
        )
        await send(_EMPTY)

    def _record(self, kind: EventType, delivery_id: int, url: str | None, scope: Scope) -> None:
        if self.anonymous:
            self.hits.add((kind, delivery_id, time.time(), url, None, None))
            return
        client = scope.get("client")
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value[:MAX_USER_AGENT].decode("latin-1")
                break
        self.hits.add((kind, delivery_id, time.time(), url, client[0] if client else None, user_agent))


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit()


async def _not_found(send: Send) -> None:
    await send(_NOT_FOUND_START)
    await send(_NOT_FOUND)


async def _not_allowed(send: Send) -> None:
    await send(_NOT_ALLOWED_START)
    await send(_EMPTY)


class TrackingMiddleware:
    """Sends ``/t/...`` straight to the tracking handler, skipping routing and the other middleware."""

    def __init__(self, app: ASGIApp, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/t/"):
            await self.handler(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class Tracking:
    """Everything the app mounts for the public routes, plus the hit buffer its lifespan starts and stops."""

    handler: TrackingHits
    routes: list[Route]
    hits: HitBuffer[Hit]
    writer: HitWriter

    def start(self) -> None:
        self.hits.start()

    async def stop(self) -> None:
        """Write every buffered hit, then release the writer's thread and connections."""
        try:
            await self.hits.stop()
        finally:
            await self.writer.close()


def build_tracking(
    runtime: Runtime,
    *,
    anonymous: bool = False,
    max_pending: int = 100_000,
    flush_interval: float = 0.1,
) -> Tracking:
    signer = TokenSigner(runtime.secret_key)
    writer = HitWriter(runtime.db.url, anonymous=anonymous, live=runtime.live, live_db=runtime.db)
    hits: HitBuffer[Hit] = HitBuffer(writer, flush_interval=flush_interval, max_pending=max_pending)
    pages = PreferenceCentre(runtime, signer, anonymous=anonymous)
    routes = [Route("/u/{token}", pages.handle, methods=["GET", "POST"])]
    return Tracking(TrackingHits(signer, hits, anonymous=anonymous), routes, hits, writer)
