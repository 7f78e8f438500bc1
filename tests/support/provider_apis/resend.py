"""Resend's batch API (``POST /emails/batch``) and ``GET /domains``, as documented: ``Authorization: Bearer``
(401 ``missing_api_key``, 403 ``invalid_api_key``; a sending-only key gets 401 ``restricted_api_key`` outside
sending), ``{statusCode, name, message}`` error bodies, at most 100 emails, batch emails without attachments or
scheduled_at, tags limited to ASCII letters, digits, ``_`` and ``-``. Strict validation (the default) refuses
the whole batch with 422 when one email is invalid; ``x-batch-validation: permissive`` sends the valid ones
and lists the others in ``errors`` by index. 429 carries ``ratelimit-*`` and ``retry-after``."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emailkit.domain.ports.provider import DELIVERY_TAG
from tests.support.provider_apis.common import (
    BROKEN,
    RATE_LIMITED,
    Accepted,
    ApiState,
    address_of,
    counted,
    new_id,
    trouble,
    valid_address,
)

API_KEY = "re_123456789_abcdefghijklmnopqrstuv"
SENDING_ONLY_KEY = "re_sending_only_abcdefghijklmnopq"
EMAIL_KEYS = {"from", "to", "subject", "bcc", "cc", "reply_to", "html", "text", "headers", "tags"}
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")


def error(status: int, name: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": status, "name": name, "message": message}, status_code=status, headers=headers
    )


def check_email(index: int, item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"emails.{index}: must be an object"
    unknown = set(item) - EMAIL_KEYS
    if unknown:
        return f"emails.{index}: `{sorted(unknown)[0]}` is not supported in batch emails"
    for required in ("from", "to", "subject"):
        if not item.get(required):
            return f"emails.{index}: Missing `{required}` field."
    if not item.get("html") and not item.get("text"):
        return f"emails.{index}: Missing `html` or `text` field."
    recipients = item["to"] if isinstance(item["to"], list) else [item["to"]]
    if len(recipients) > 50 or not all(isinstance(r, str) and valid_address(r) for r in recipients):
        return f"emails.{index}: Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."
    if not valid_address(item["from"]):
        return f"emails.{index}: Invalid `from` field."
    headers = item.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return f"emails.{index}: `headers` must be an object of strings"
    for tag in item.get("tags", []):
        if not (isinstance(tag, dict) and set(tag) == {"name", "value"}):
            return f"emails.{index}: tags must be objects of `name` and `value`"
        if not (_TAG.fullmatch(str(tag["name"])) and _TAG.fullmatch(str(tag["value"]))):
            return f"emails.{index}: Tags should only contain ASCII letters, numbers, underscores, or dashes."
    return None


def key_of(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key if scheme == "Bearer" and key else None


async def batch_items(request: Request) -> list[Any] | JSONResponse:
    try:
        items = json.loads(await request.body())
    except ValueError:
        return error(422, "validation_error", "Invalid JSON body.")
    if not isinstance(items, list) or not items:
        return error(422, "validation_error", "The batch must be a non-empty array of emails.")
    if len(items) > 100:
        return error(422, "validation_error", "Too many emails in the batch: at most 100.")
    return items


def trouble_answer(items: list[Any]) -> JSONResponse | None:
    recipients = [
        address_of(str(r)) for item in items if isinstance(item, dict) for r in list(item.get("to") or [])
    ]
    problem = trouble(recipients)
    if problem == RATE_LIMITED:
        limits = {
            "ratelimit-limit": "2",
            "ratelimit-remaining": "0",
            "ratelimit-reset": "1",
            "retry-after": "1",
        }
        return error(
            429,
            "rate_limit_exceeded",
            "Too many requests. You can only make 2 requests per second.",
            **limits,
        )
    if problem == BROKEN:
        return error(500, "application_error", "An unexpected error occurred, please try again.")
    return None


def accept_valid(state: ApiState, items: list[Any], problems: dict[int, str]) -> list[dict[str, str]]:
    data = []
    for index, item in enumerate(items):
        if index in problems:
            continue
        email_id = new_id()
        data.append({"id": email_id})
        state.accept(
            Accepted(
                provider_id=email_id,
                to=address_of(item["to"][0] if isinstance(item["to"], list) else item["to"]),
                sender=item["from"],
                subject=item["subject"],
                headers=dict(item.get("headers", {})),
                html=item.get("html"),
                text=item.get("text"),
                raw=item,
            )
        )
    return data


def delivery_tag(item: Any) -> str:
    tags = item.get("tags", []) if isinstance(item, dict) else []
    return next((str(t.get("value", "")) for t in tags if t.get("name") == DELIVERY_TAG), "")


def sending_key_error(request: Request, valid: str) -> JSONResponse | None:
    key = key_of(request)
    if key is None:
        return error(401, "missing_api_key", "Missing API key in the authorization header.")
    if key not in (valid, SENDING_ONLY_KEY):
        return error(403, "invalid_api_key", "API key is invalid")
    return None


def resend_app(state: ApiState) -> Starlette:
    async def batch(request: Request) -> Response:
        unauthorised = sending_key_error(request, state.key)
        if unauthorised is not None:
            return unauthorised
        items = await batch_items(request)
        if isinstance(items, JSONResponse):
            return items
        problems = {i: p for i, item in enumerate(items) if (p := check_email(i, item)) is not None}
        permissive = request.headers.get("x-batch-validation", "strict") == "permissive"
        if problems and not permissive:
            return error(422, "validation_error", next(iter(problems.values())))
        if state.handover is not None:
            state.handover.request(delivery_tag(item) for item in items)
        refused = trouble_answer(items)
        if refused is not None:
            return refused
        answer: dict[str, Any] = {"data": accept_valid(state, items, problems)}
        if permissive:
            answer["errors"] = [{"index": i, "message": p} for i, p in problems.items()]
        return JSONResponse(answer)

    async def domains(request: Request) -> Response:
        key = key_of(request)
        if key is None:
            return error(401, "missing_api_key", "Missing API key in the authorization header.")
        if key == SENDING_ONLY_KEY:
            return error(401, "restricted_api_key", "This API key is restricted to only send emails.")
        if key != state.key:
            return error(403, "invalid_api_key", "API key is invalid")
        return JSONResponse(
            {
                "object": "list",
                "has_more": False,
                "data": [
                    {"id": new_id(), "name": "news.example.com", "status": "verified", "region": "us-east-1"}
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/emails/batch", counted(state, batch), methods=["POST"]),
            Route("/domains", domains, methods=["GET"]),
        ]
    )


def webhook(accepted: Accepted) -> tuple[dict[str, str], bytes]:
    """The ``email.delivered`` event Resend posts about an email it accepted (tags come back as an object,
    headers as name/value pairs), with its Svix message id header (unsigned: our parser has no secret)."""
    item = accepted.raw
    now = datetime.now(UTC).isoformat()
    event = {
        "type": "email.delivered",
        "created_at": now,
        "data": {
            "created_at": now,
            "email_id": accepted.provider_id,
            "from": item["from"],
            "to": item["to"],
            "subject": item["subject"],
            "headers": [{"name": n, "value": v} for n, v in item.get("headers", {}).items()],
            "tags": {t["name"]: t["value"] for t in item.get("tags", [])},
        },
    }
    return {"svix-id": f"msg_{new_id()}", "svix-timestamp": str(int(time.time()))}, json.dumps(event).encode()
