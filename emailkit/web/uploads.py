"""Guards for multipart (file upload) GraphQL requests, in front of the GraphQL view.

* Size: a body larger than the limit is refused with 413, by its Content-Length before anything is read,
  or as soon as the bytes received pass the limit (chunked bodies), so an upload never fills the disk.
* CSRF: ``multipart/form-data`` is a "simple" content type that any web page may POST cross-site without
  a CORS preflight. Like Apollo Server, multipart requests must carry a header such a page cannot set
  without a preflight: ``GraphQL-Require-Preflight``, ``Apollo-Require-Preflight`` or
  ``X-Apollo-Operation-Name`` (any non-empty value).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFLIGHT_HEADERS = (b"graphql-require-preflight", b"apollo-require-preflight", b"x-apollo-operation-name")


class BodyTooLarge(Exception):
    pass


def _is_multipart(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() == b"multipart/form-data"


async def _reply(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI wrapper of the GraphQL endpoint applying the size limit and preflight rule to multipart."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not _is_multipart(headers):
            await self.app(scope, receive, send)
            return
        if not any(headers.get(name, b"").strip() for name in PREFLIGHT_HEADERS):
            await _reply(
                send,
                400,
                "Multipart requests must send a 'GraphQL-Require-Preflight: 1' header (CSRF protection)",
                "PREFLIGHT_REQUIRED",
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _reply(
            send,
            413,
            f"The request is larger than {self.max_bytes // (1 << 20)} MiB (EMAILKIT_MAX_UPLOAD_BYTES)",
            "PAYLOAD_TOO_LARGE",
        )
