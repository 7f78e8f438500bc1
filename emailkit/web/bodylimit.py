"""Request body limits for every route, applied before anything is read.

A pure ASGI middleware: a request whose Content-Length is over its route's limit is answered 413 at once (the
body is never read, and the connection is closed). A body without a Content-Length (chunked) is counted as the
app receives it, and the read that passes the limit fails, so it stops there. Nothing is buffered here: the
app still reads the body the way it wants to. A declared length within the limit needs no counting (the server
delivers exactly that many bytes), nor does a GET or HEAD that declares no body: the hot tracking routes pay
for one scan of the headers only.

Limits by route:

* ``/graphql``: the JSON limit (EMAILKIT_MAX_REQUEST_BYTES), or the upload limit (EMAILKIT_MAX_UPLOAD_BYTES)
  for multipart requests, which carry CSV files for imports.
* ``/api/...`` (the REST API, e.g. a batch of custom events): the JSON limit, as the GraphQL API's.
* ``/webhooks/...``: :data:`WEBHOOK_BYTES`.
* everything else (``/subscribe``, ``/confirm``, ``/u/``, ``/t/``, probes, exports, static files, unknown
  paths): :data:`SMALL_BYTES`. None of them takes more than a short form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The signup form, the one-click unsubscribe body and confirmation POSTs are a few hundred bytes.
SMALL_BYTES = 16 * 1024
# The largest batch a provider posts is SendGrid's Event Webhook: it posts every 30 s or once a batch reaches
# 768 KB. An SNS notification (SES) is at most 256 KiB of message (HTTP(S) subscriptions cannot be raised to
# the 1 MiB large-message size), which re-escaping into the envelope grows at worst to about 1.5 MiB (every
# character as \\uXXXX). Brevo's batched webhooks are 500 events; Mailgun, Postmark and Resend post one event
# per request. 2 MiB holds all of these with room to spare.
WEBHOOK_BYTES = 2 * 1024 * 1024


class BodyTooLarge(Exception):
    """Raised by the counting ``receive`` once the body passes the route's limit."""


@dataclass(frozen=True)
class BodyLimits:
    graphql: int
    upload: int
    webhook: int = WEBHOOK_BYTES
    small: int = SMALL_BYTES

    def for_request(
        self, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, str, bytes | None, bool]:
        """The limit, the setting that names it (for the answer), the declared Content-Length, and whether
        a Transfer-Encoding announces a body of unknown length."""
        declared = None
        chunked = False
        content_type = b""
        for name, value in headers:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
        if path == "/graphql":
            if content_type.split(b";", 1)[0].strip().lower() == b"multipart/form-data":
                return self.upload, "EMAILKIT_MAX_UPLOAD_BYTES", declared, chunked
            return self.graphql, "EMAILKIT_MAX_REQUEST_BYTES", declared, chunked
        if path.startswith("/api/"):
            return self.graphql, "EMAILKIT_MAX_REQUEST_BYTES", declared, chunked
        if path.startswith("/webhooks/"):
            return self.webhook, "", declared, chunked
        return self.small, "", declared, chunked


def _size(limit: int) -> str:
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit >= 1 << 10 and limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


async def reply_too_large(scope: Scope, send: Send, limit: int, setting: str) -> None:
    message = f"The request body is larger than {_size(limit)}"
    if setting:
        message += f" ({setting})"
    payload: dict[str, object]
    if scope["path"] == "/graphql":
        extensions = {"code": "PAYLOAD_TOO_LARGE", "limitBytes": limit}
        payload = {"errors": [{"message": message, "extensions": extensions}]}
    else:
        payload = {"error": message, "code": "PAYLOAD_TOO_LARGE", "limitBytes": limit}
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: the server closes the connection after this answer.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting, declared, chunked = self.limits.for_request(scope["path"], scope["headers"])
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await reply_too_large(scope, send, limit, setting)
                return
            if not chunked:
                await self.app(scope, receive, send)
                return
        elif declared is None and not chunked and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        await self._counting(scope, receive, send, limit, setting)

    async def _counting(self, scope: Scope, receive: Receive, send: Send, limit: int, setting: str) -> None:
        """Run the app on a body whose length nothing vouches for: counted as the app reads it, 413 past `limit`."""
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the failed read (a 400, a 500) is replaced by the 413 below.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await reply_too_large(scope, send, limit, setting)
