"""Strawberry's ASGI view with API-key authentication and a GraphiQL page served without any CDN."""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.types import HTTPMethod
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from emailkit.domain.apikeys import Principal, authenticate
from emailkit.domain.runtime import Runtime
from emailkit.schema.context import Context


class Unauthenticated(Exception):
    pass


def bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def graphiql_page() -> str:
    return (resources.files("emailkit.web") / "templates" / "graphiql.html").read_text(encoding="utf-8")


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        # Only graphql-transport-ws: the legacy graphql-ws protocol has no connection_init gate we trust.
        super().__init__(subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,), **kwargs)
        self.runtime = runtime
        self._ide_html: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Unauthenticated as exc:
            response = JSONResponse(
                {"errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}]},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="emailkit"'},
            )
            await response(scope, receive, send)

    async def _principal(self, raw_key: str | None) -> Principal | None:
        if not raw_key:
            return None
        async with self.runtime.db.session() as session:
            return await authenticate(session, raw_key)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        if isinstance(request, WebSocket):
            # Authenticated in on_ws_connect from the connection_init payload.
            return Context(runtime=self.runtime, principal=None, request=request)
        if self._wants_ide(request):
            return Context(runtime=self.runtime, principal=None, request=request)
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'")
        principal = await self._principal(token)
        if principal is None:
            raise Unauthenticated("Unknown or revoked API key")
        return Context(runtime=self.runtime, principal=principal, request=request)

    def _wants_ide(self, request: Request) -> bool:
        method: HTTPMethod = request.method.upper()  # type: ignore[assignment]
        return (
            method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and ("query" not in request.query_params)
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization")
        token = bearer_token(raw) if isinstance(raw, str) else None
        principal = await self._principal(token)
        if principal is None:
            raise ConnectionRejectionError({"message": "Missing or unknown API key"})
        context.principal = principal
        return await super().on_ws_connect(context)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        if self._ide_html is None:
            self._ide_html = graphiql_page()
        return HTMLResponse(
            self._ide_html,
            headers={
                # The IDE runs only our own scripts; nothing is loaded from elsewhere.
                "Content-Security-Policy": (
                    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                    "connect-src 'self' ws: wss:; font-src 'self' data:"
                ),
                "X-Frame-Options": "DENY",
                "Cache-Control": "no-store",
            },
        )
