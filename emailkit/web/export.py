"""`GET /export/subscribers.csv`: a streaming CSV export of all subscribers, a list or a segment.

Authenticated like the GraphQL API (``Authorization: Bearer <key>``, any role). Query parameters:
``listId`` and ``segmentId`` (global IDs, both optional, combined with AND) and ``subscriptionStatus``
(with ``listId``: only subscriptions in that state).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from emailkit import globalid
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import SubscriptionStatus
from emailkit.domain.apikeys import authenticate
from emailkit.domain.audience import exports
from emailkit.domain.errors import DomainError
from emailkit.domain.runtime import Runtime
from emailkit.web.auth import bearer_token
from emailkit.web.ratelimit import ApiRateLimiter, RateLimited
from emailkit.web.workspace import HEADER, WrongWorkspace, acting_workspace


class BadRequest(Exception):
    pass


def _global_id(value: str | None, expected: str, param: str) -> int | None:
    """The primary key inside a global ID (base64 of "Type:pk") of the expected type."""
    if value is None or value == "":
        return None
    pk = globalid.pk_of(value, expected)
    if pk is None:
        raise BadRequest(f"{param}: not a valid {expected} ID")
    return pk


def _selection(request: Request) -> exports.Selection:
    params = request.query_params
    status = params.get("subscriptionStatus")
    if status is not None and status not in SubscriptionStatus.__members__:
        raise BadRequest("subscriptionStatus: must be one of " + ", ".join(SubscriptionStatus.__members__))
    list_id = _global_id(params.get("listId"), "MailingList", "listId")
    if status is not None and list_id is None:
        raise BadRequest("subscriptionStatus: only with listId")
    return exports.Selection(
        list_id=list_id,
        segment_id=_global_id(params.get("segmentId"), "Segment", "segmentId"),
        subscription_status=SubscriptionStatus(status) if status is not None else None,
    )


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="emailkit"'}
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status, headers=headers)


class ScopedStreamingResponse(StreamingResponse):
    """Streams its body inside the workspace's scope: the rows are read while the response is sent, after the
    endpoint has returned."""

    def __init__(self, workspace_id: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace_id = workspace_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with workspace_scope(self.workspace_id):
            await super().__call__(scope, receive, send)


def export_routes(runtime: Runtime, api_limiter: ApiRateLimiter | None = None) -> list[Route]:
    async def subscribers_csv(request: Request) -> Response:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return _error(401, "Missing API key: send 'Authorization: Bearer <key>'", "UNAUTHENTICATED")
        async with runtime.db.session() as session:
            principal = await authenticate(session, token)
        if principal is None:
            return _error(401, "Unknown or revoked API key", "UNAUTHENTICATED")
        try:
            workspace_id = await acting_workspace(runtime.db, principal, request.headers.get(HEADER))
        except WrongWorkspace as exc:
            return _error(403, str(exc), "FORBIDDEN")
        if workspace_id is None:
            return _error(
                400, f"An instance key exports a workspace it names: send {HEADER}", "WORKSPACE_REQUIRED"
            )
        if api_limiter is not None:
            try:
                await api_limiter.check(principal.key_id)
            except RateLimited as exc:
                return _error(429, str(exc), "RATE_LIMITED", {"Retry-After": str(exc.retry_after)})
        try:
            selection = _selection(request)
        except BadRequest as exc:
            return _error(400, str(exc), "INVALID_ID" if "ID" in str(exc) else "INVALID_ARGUMENT")
        try:
            with workspace_scope(workspace_id):
                export = await exports.prepare_export(runtime.db, selection)
        except DomainError as exc:
            problem = exc.errors[0]
            return _error(404, problem.message, problem.code.value)
        return ScopedStreamingResponse(
            workspace_id,
            exports.csv_chunks(runtime.db, export),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="subscribers.csv"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return [Route("/export/subscribers.csv", subscribers_csv, methods=["GET"])]
