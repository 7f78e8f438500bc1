"""The CSRF guard of multipart (file upload) GraphQL requests, in front of the GraphQL view.

``multipart/form-data`` is a "simple" content type that any web page may POST cross-site without a CORS
preflight. Like Apollo Server, multipart requests must carry a header such a page cannot set without a
preflight: ``GraphQL-Require-Preflight``, ``Apollo-Require-Preflight`` or ``X-Apollo-Operation-Name`` (any
non-empty value). Their size is bounded, like every body, by :mod:`emailkit.web.bodylimit`
(EMAILKIT_MAX_UPLOAD_BYTES).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

PREFLIGHT_HEADERS = (b"graphql-require-preflight", b"apollo-require-preflight", b"x-apollo-operation-name")


def _is_multipart(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() == b"multipart/form-data"


def is_multipart(scope: Scope) -> bool:
    """Whether an HTTP request is a multipart (file upload) one."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"multipart/form-data")
    return False


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
    """ASGI wrapper of the GraphQL endpoint applying the preflight rule to multipart requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if _is_multipart(headers) and not any(headers.get(n, b"").strip() for n in PREFLIGHT_HEADERS):
                await _reply(
                    send,
                    400,
                    "Multipart requests must send a 'GraphQL-Require-Preflight: 1' header (CSRF protection)",
                    "PREFLIGHT_REQUIRED",
                )
                return
        await self.app(scope, receive, send)
