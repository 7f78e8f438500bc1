"""Brevo's transactional API (``POST /v3/smtp/email``) and ``GET /v3/account``, as documented: the ``api-key``
header (401 ``unauthorized`` otherwise), ``{code, message}`` error bodies (400 ``missing_parameter`` /
``invalid_parameter``), 201 ``{"messageId": "<...@smtp-relay.mailin.fr>"}``, 429 with the
``x-sib-ratelimit-*`` headers (reset in seconds)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.provider_apis.common import (
    BROKEN,
    RATE_LIMITED,
    Accepted,
    ApiState,
    counted,
    trouble,
    valid_address,
)

API_KEY = "xkeysib-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-AbCdEfGhIjKlMnOp"
BODY_KEYS = {
    "sender", "to", "bcc", "cc", "htmlContent", "textContent", "subject", "replyTo", "attachment", "headers",
    "templateId", "params", "messageVersions", "tags", "scheduledAt", "batchId",
}  # fmt: skip
CONTACT_KEYS = {"email", "name"}


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def check(body: Any) -> tuple[str, str] | None:
    if not isinstance(body, dict):
        return "invalid_parameter", "Input must be a JSON object"
    unknown = set(body) - BODY_KEYS
    if unknown:
        return "invalid_parameter", f"{sorted(unknown)[0]} is not a valid parameter"
    for required in ("sender", "to"):
        if not body.get(required):
            return "missing_parameter", f"{required} is missing"
    if "templateId" not in body:
        if not body.get("subject"):
            return "missing_parameter", "subject is missing"
        if not body.get("htmlContent") and not body.get("textContent"):
            return "missing_parameter", "htmlContent is missing"
    refused = check_contacts(body)
    if refused is not None:
        return refused
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return "invalid_parameter", "headers must be an object of strings"
    return None


def check_contacts(body: dict[str, Any]) -> tuple[str, str] | None:
    contacts = [("sender", body["sender"]), *(("to", c) for c in body["to"])]
    if "replyTo" in body:
        contacts.append(("replyTo", body["replyTo"]))
    for where, contact in contacts:
        if not isinstance(contact, dict) or set(contact) - CONTACT_KEYS or "email" not in contact:
            return "invalid_parameter", f"{where} must be an object of email and name"
        if not valid_address(contact["email"]):
            return "invalid_parameter", f"email is not valid in {where}"
        if "name" in contact and not contact["name"]:
            return "invalid_parameter", f"name is empty in {where}"
    return None


def brevo_app(state: ApiState) -> Starlette:
    async def send(request: Request) -> Response:
        if request.headers.get("api-key") != state.key:
            return error(401, "unauthorized", "Key not found")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return error(415, "invalid_parameter", "Content-Type must be application/json")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "bad_request", "Malformed JSON")
        problem = check(body)
        if problem is not None:
            return error(400, *problem)
        custom = body.get("headers", {}).get("X-Mailin-custom", "")
        if state.handover is not None:
            state.handover.request([json.loads(custom).get("emailkit_delivery", "") if custom else ""])
        trouble_kind = trouble([c["email"].lower() for c in body["to"]])
        if trouble_kind == RATE_LIMITED:
            return error(
                429,
                "too_many_requests",
                "The expected rate limit is exceeded.",
                **{
                    "x-sib-ratelimit-limit": "1000",
                    "x-sib-ratelimit-remaining": "0",
                    "x-sib-ratelimit-reset": "7",
                },
            )
        if trouble_kind == BROKEN:
            return error(500, "internal_error", "Internal server error")
        message_id = f"<{time.strftime('%Y%m%d%H%M')}.{secrets.randbelow(10**11):011d}@smtp-relay.mailin.fr>"
        state.accept(
            Accepted(
                provider_id=message_id,
                to=body["to"][0]["email"].lower(),
                sender=body["sender"]["email"],
                subject=body["subject"],
                headers=dict(body.get("headers", {})),
                html=body.get("htmlContent"),
                text=body.get("textContent"),
                raw=body,
            )
        )
        return JSONResponse({"messageId": message_id}, status_code=201)

    async def account(request: Request) -> Response:
        if request.headers.get("api-key") != state.key:
            return error(401, "unauthorized", "Key not found")
        return JSONResponse(
            {
                "email": "owner@example.com",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "companyName": "Example",
                "plan": [{"type": "free", "credits": 300, "creditsType": "sendLimit"}],
            }
        )

    return Starlette(
        routes=[
            Route("/v3/smtp/email", counted(state, send), methods=["POST"]),
            Route("/v3/account", account, methods=["GET"]),
        ]
    )


def webhook(accepted: Accepted) -> bytes:
    """The transactional ``delivered`` event Brevo posts about a message it accepted: ``X-Mailin-custom``
    comes back verbatim, the message id with its angle brackets."""
    now = time.time()
    event = {
        "event": "delivered",
        "email": accepted.to,
        "id": 814119,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ts": int(now),
        "message-id": accepted.provider_id,
        "ts_event": int(now),
        "subject": accepted.subject,
        "X-Mailin-custom": accepted.headers.get("X-Mailin-custom", ""),
        "sending_ip": "185.41.28.109",
        "ts_epoch": int(now * 1000),
        "tags": [],
    }
    return json.dumps(event).encode()
