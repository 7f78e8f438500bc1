"""Strawberry's ASGI view with API-key authentication and a GraphiQL page served without any CDN."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter
from graphql import GraphQLError, GraphQLFormattedError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.types import HTTPMethod
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ErrorMessage, SubscribeMessage
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from emailkit.db.engine import Failure, failure_of
from emailkit.domain.apikeys import is_active
from emailkit.domain.runtime import Runtime
from emailkit.schema.context import Context
from emailkit.schema.error_policy import SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE
from emailkit.web.auth import ApiKeyAuth, Forbidden, Unauthenticated, bearer_token
from emailkit.web.persisted import PersistedQueries, PersistedQueryError
from emailkit.web.ratelimit import ApiRateLimiter, RateLimited
from emailkit.web.workspace import HEADER, WrongWorkspace, acting_scope, acting_workspace

log = logging.getLogger(__name__)

# graphql-transport-ws's close code for a refused or withdrawn authorisation.
CLOSE_FORBIDDEN = 4403
# When a client should try again after a database outage or a full connection pool.
RETRY_AFTER_SECONDS = 5


def unavailable_response(
    *, retry_after: int = RETRY_AFTER_SECONDS, message: str = UNAVAILABLE_MESSAGE
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": SERVICE_UNAVAILABLE}}]},
        status_code=503,
        headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
    )


def _unavailable(response_data: Any) -> bool:
    results = response_data if isinstance(response_data, list) else [response_data]
    return any(
        (error.get("extensions") or {}).get("code") == SERVICE_UNAVAILABLE
        for result in results
        if isinstance(result, dict)
        for error in result.get("errors") or ()
    )


def json_bytes(data: object) -> bytes:
    """A response body: orjson (≈ 20 µs for a page of 50 subscribers, 23 KB, against ≈ 300 µs for
    json.dumps), or the standard encoder for what orjson refuses and a JSON attribute may hold (integers
    beyond 64 bits, lone surrogates, non-string keys). Both give the same JSON value; orjson writes non-ASCII
    characters as UTF-8 rather than as \\u escapes."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """graphql-transport-ws messages are text frames; the view's encoder gives bytes."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(json_bytes(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


def rate_limited_error(exc: RateLimited) -> GraphQLFormattedError:
    return GraphQLError(
        str(exc), extensions={"code": "RATE_LIMITED", "retryAfter": exc.retry_after}
    ).formatted


class RateLimitedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws where every operation (query, mutation or subscription) counts against the
    connection's API key; one over the limit gets an ``error`` message with code RATE_LIMITED."""

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # The operation's task copies the context here: it runs in the connection's workspace.
        with acting_scope(self.context.workspace_id):
            await self._subscribe(message)

    async def _subscribe(self, message: SubscribeMessage) -> None:
        limiter: ApiRateLimiter | None = getattr(self.view, "api_limiter", None)
        principal = self.context.principal
        # Protocol violations (not yet acknowledged, duplicate id) are left to the base handler's close codes.
        if limiter is not None and principal is not None and message["id"] not in self.operations:
            try:
                await limiter.check(principal.key_id)
            except RateLimited as exc:
                refusal: ErrorMessage = {
                    "id": message["id"],
                    "type": "error",
                    "payload": [rate_limited_error(exc)],
                }
                await self.send_message(refusal)
                return
        await super().handle_subscribe(message)


def graphiql_page() -> str:
    return (resources.files("emailkit.web") / "templates" / "graphiql.html").read_text(encoding="utf-8")


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = RateLimitedTransportWS
    websocket_adapter_class = TextWebSocketAdapter

    def __init__(
        self,
        runtime: Runtime,
        *,
        key_recheck_seconds: float = 30.0,
        key_cache_seconds: float = 0.0,
        api_limiter: ApiRateLimiter | None = None,
        persisted_queries: PersistedQueries | None = None,
        **kwargs: Any,
    ) -> None:
        # Only graphql-transport-ws: the legacy graphql-ws protocol has no connection_init gate we trust.
        super().__init__(subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,), **kwargs)
        self.runtime = runtime
        self.auth = ApiKeyAuth(runtime, key_cache_seconds=key_cache_seconds, api_limiter=api_limiter)
        self.api_limiter = api_limiter
        self.persisted_queries = persisted_queries
        self._ide_html: str | None = None
        self._key_recheck_seconds = key_recheck_seconds
        self._watchers: set[asyncio.Task[None]] = set()

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
        except Forbidden as exc:
            response = JSONResponse(
                {"errors": [{"message": str(exc), "extensions": {"code": "FORBIDDEN"}}]}, status_code=403
            )
            await response(scope, receive, send)
        except RateLimited as exc:
            response = JSONResponse(
                {"errors": [rate_limited_error(exc)]},
                status_code=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
            await response(scope, receive, send)
        except PersistedQueryError as exc:
            response = JSONResponse(
                {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]},
                status_code=exc.status_code,
                # A miss must reach the server again once the client has sent the text (GETs can be cached).
                headers={"Cache-Control": "private, no-cache, must-revalidate"},
            )
            await response(scope, receive, send)
        except Exception as exc:
            # Authentication happens before execution: with the database down it cannot answer, and the
            # client should hear "try again" rather than a bare 500.
            if scope["type"] != "http" or failure_of(exc) is not Failure.UNAVAILABLE:
                raise
            log.warning("database unavailable: %s", exc)
            await unavailable_response()(scope, receive, send)

    async def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        context = kwargs.get("context")
        workspace_id = context.workspace_id if isinstance(context, Context) else None
        try:
            with acting_scope(workspace_id):
                return await super().execute_operation(*args, **kwargs)
        finally:
            if isinstance(context, Context):
                await context.release_reads()

    def encode_json(self, data: object) -> bytes:
        return json_bytes(data)

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        if _unavailable(response_data):
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        if isinstance(request, WebSocket):
            # Authenticated in on_ws_connect from the connection_init payload.
            return Context(runtime=self.runtime, principal=None, request=request)
        if self._wants_ide(request):
            return Context(runtime=self.runtime, principal=None, request=request)
        caller = await self.auth.caller(request.headers)
        return Context(
            runtime=self.runtime,
            principal=caller.principal,
            request=request,
            workspace_id=caller.workspace_id,
        )

    def _wants_ide(self, request: Request) -> bool:
        method: HTTPMethod = request.method.upper()  # type: ignore[assignment]
        return (
            method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
            # A persisted query by GET has no `query` either: it is an operation, never the IDE.
            and "extensions" not in request.query_params
        )

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        return super().should_render_graphql_ide(request) and "extensions" not in request.query_params

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        persisted = (request_data.extensions or {}).get("persistedQuery")
        if persisted is not None and self.persisted_queries is not None:
            # The operation type is checked on the stored text as on any other: a GET never runs a mutation.
            request_data.query = self.persisted_queries.resolve(request_data.query, persisted)
        return await super().execute_single(
            request=request,
            request_adapter=request_adapter,
            sub_response=sub_response,
            context=context,
            root_value=root_value,
            request_data=request_data,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        raw = params.get("Authorization") or params.get("authorization")
        token = bearer_token(raw) if isinstance(raw, str) else None
        principal = await self.auth.principal(token)
        if principal is None:
            raise ConnectionRejectionError({"message": "Missing or unknown API key"})
        named = params.get(HEADER) or params.get(HEADER.lower())
        if not isinstance(named, str) and isinstance(context.request, WebSocket):
            named = context.request.headers.get(HEADER)
        try:
            context.workspace_id = await acting_workspace(
                self.runtime.db, principal, named if isinstance(named, str) else None
            )
        except WrongWorkspace as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from exc
        context.principal = principal
        if isinstance(context.request, WebSocket):
            watcher = asyncio.create_task(self._watch_key(context.request, principal.key_id))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
        return await super().on_ws_connect(context)

    async def _watch_key(self, websocket: WebSocket, key_id: int) -> None:
        """Close the connection once its API key is revoked: a subscription can stream for hours."""
        while True:
            await asyncio.sleep(self._key_recheck_seconds)
            if WebSocketState.DISCONNECTED in (websocket.client_state, websocket.application_state):
                return
            try:
                async with self.runtime.db.session() as session:
                    active = await is_active(session, key_id)
            except Exception:
                # The database being away is no reason to drop a live connection; check again later.
                log.warning("could not re-check the API key of a WebSocket connection", exc_info=True)
                continue
            if not active:
                if websocket.application_state is not WebSocketState.DISCONNECTED:
                    await websocket.close(code=CLOSE_FORBIDDEN, reason="API key revoked")
                return

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
