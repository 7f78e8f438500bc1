"""``POST /api/events``: custom events in batches from the user's own systems (the REST form of ``trackEvent``).

Authenticated exactly as ``/graphql`` (:mod:`emailkit.web.auth`: the bearer key and its cache, the per-key rate
limit, X-Emailkit-Workspace), with the role of the API's writes (VIEWER keys are read-only), admitted through the
same gate (:mod:`emailkit.web.admission`) and bounded like its JSON bodies (EMAILKIT_MAX_REQUEST_BYTES).

Body: ``{"events": [item, ...]}``, at most 1,000 items, each ``{email | subscriberId, name, properties,
occurredAt, idempotencyKey}`` as in ``TrackEventInput``. The batch is one transaction, and each item is answered
on its own (an item in error costs the others nothing): 200 ``{"accepted", "duplicates", "results": [{"index",
"status": "recorded|duplicate|error", "eventId"?, "code"?, "field"?, "message"?}]}``. A request refused as a
whole stores nothing: 400 (not JSON, or not that shape), 401, 403, 413 (more than 1,000 events, or a body over
the limit), 429, 503.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from emailkit import globalid
from emailkit.db.engine import Failure, failure_of
from emailkit.domain.automation.events import (
    MAX_BATCH,
    EventInput,
    ItemResult,
    ItemStatus,
    TrackedEvents,
    record_custom_events,
)
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.runtime import Runtime
from emailkit.domain.transactions import ConcurrentChange, run_in_transaction
from emailkit.schema.permissions import CanWrite
from emailkit.web.admission import AdmissionControl, AdmissionGate
from emailkit.web.auth import ApiKeyAuth, Caller, Forbidden, Unauthenticated
from emailkit.web.graphql import json_bytes, unavailable_response
from emailkit.web.ratelimit import RateLimited
from emailkit.web.workspace import HEADER, acting_scope

log = logging.getLogger(__name__)

PATH = "/api/events"


class Refused(Exception):
    """The request as a whole is refused (nothing stored): its HTTP status and error."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.headers, self.extra = status, code, headers, extra

    def response(self) -> Response:
        error = {"message": str(self), "code": self.code, **self.extra}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


async def _writer(auth: ApiKeyAuth, request: Request) -> Caller:
    try:
        caller = await auth.caller(request.headers)
    except Unauthenticated as exc:
        raise Refused(
            401, "UNAUTHENTICATED", str(exc), headers={"WWW-Authenticate": 'Bearer realm="emailkit"'}
        ) from exc
    except RateLimited as exc:
        raise Refused(429, "RATE_LIMITED", str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    except Forbidden as exc:
        raise Refused(403, "FORBIDDEN", str(exc)) from exc
    if caller.workspace_id is None:
        raise Refused(
            400, "WORKSPACE_REQUIRED", f"An instance key sends events to a workspace it names: send {HEADER}"
        )
    if caller.principal.role not in CanWrite.roles:
        raise Refused(403, "FORBIDDEN", CanWrite.message)
    return caller


def _parsed(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # What orjson refuses and JSON allows (integers beyond 64 bits) the standard parser reads.
    try:
        return json.loads(body)
    except ValueError as exc:
        raise Refused(400, "INVALID_JSON", f"The body is not valid JSON: {exc}") from exc


def _items(document: object) -> list[EventInput]:
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        raise Refused(400, "INVALID_INPUT", 'The body must be a JSON object {"events": [...]}')
    if len(events) > MAX_BATCH:
        raise Refused(
            413,
            ErrorCode.TOO_MANY_EVENTS.value,
            f"At most {MAX_BATCH} events per request ({len(events)} given): send them in several requests",
            limit=MAX_BATCH,
        )
    return [EventInput.from_json(item) for item in events]


def _result(r: ItemResult) -> dict[str, Any]:
    answer: dict[str, Any] = {"index": r.index, "status": r.status.value}
    if r.event_id is not None:
        answer["eventId"] = globalid.encode("Event", r.event_id)
    if r.status is ItemStatus.ERROR:
        first = r.errors[0]
        answer.update(code=first.code.value, field=first.field, message=first.message)
    return answer


def _answer(tracked: TrackedEvents) -> Response:
    body = {
        "accepted": tracked.accepted,
        "duplicates": tracked.duplicates,
        "results": [_result(r) for r in tracked.results],
    }
    return Response(json_bytes(body), media_type="application/json", headers={"Cache-Control": "no-store"})


async def _record(runtime: Runtime, workspace_id: int, items: list[EventInput]) -> TrackedEvents:
    with acting_scope(workspace_id):
        return await run_in_transaction(runtime.db, lambda s: record_custom_events(s, items))


def events_route(runtime: Runtime, auth: ApiKeyAuth, admission: AdmissionGate) -> Route:
    async def track(request: Request) -> Response:
        try:
            caller = await _writer(auth, request)
            items = _items(_parsed(await request.body()))
            assert caller.workspace_id is not None
            return _answer(await _record(runtime, caller.workspace_id, items))
        except Refused as exc:
            return exc.response()
        except ConcurrentChange as exc:
            return Refused(409, exc.errors[0].code.value, exc.errors[0].message).response()
        except DomainError as exc:
            return Refused(422, exc.errors[0].code.value, exc.errors[0].message).response()
        except Exception as exc:
            # As /graphql: with the database away the client hears "try again", not a bare 500.
            if failure_of(exc) is not Failure.UNAVAILABLE:
                raise
            log.warning("database unavailable: %s", exc)
            return unavailable_response()

    return Route(PATH, AdmissionControl(request_response(track), admission), methods=["POST"])
