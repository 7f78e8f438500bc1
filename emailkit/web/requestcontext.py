"""Each request's identity in logs and traces: its request id, and the span that the rest of the request's
spans hang from.

A client (or the proxy in front of us) may name the request with ``X-Request-ID``; a value that is not a
plain token (letters, digits, ``-._:``, up to 128 characters) is replaced, so that a client cannot forge log
lines or grow them without bound. The id is echoed in the response either way and bound to the log context
for everything the request logs, uvicorn's access line included (uvicorn writes it from inside ``send``).
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emailkit import traces

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER:
            if _VALID.fullmatch(value):
                return str(value.decode())
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        echoed = (HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            if not traces.active():
                await self.app(scope, receive, send_with_id)
                return
            await self._traced(scope, receive, send_with_id, rid)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        attributes = {"http.request.method": method, "url.path": scope["path"], "emailkit.request_id": rid}
        status: list[int] = []

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        # Named by the route's template once routing has found it, never by the raw path (tokens in it).
        with traces.continued(f"HTTP {method}", headers, attributes, kind="server") as span:
            await self.app(scope, receive, send_noting_status)
            if span is not None:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                if status:
                    span.set_attribute("http.response.status_code", status[0])
