"""Mailgun's messages API (``POST /v3/{domain}/messages``, multipart or urlencoded form) and
``GET /v3/domains/{domain}``, as documented: HTTP Basic ``api:<key>`` (401 ``Forbidden`` as plain text
otherwise), ``{"message": ...}`` error bodies, 200 ``{"id": "<...>", "message": "Queued. Thank you."}``.

Batch sending: up to 1000 ``to`` fields with ``recipient-variables``, a JSON object keyed by each recipient's
plain address; every recipient then gets a message of their own, with ``%recipient.<name>%`` replaced by their
value in the subject, text, HTML, ``h:`` headers and ``v:`` variables. ``accepted`` holds one entry per
recipient, as Mailgun would send it."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from emailkit.domain.ports.provider import DELIVERY_TAG
from tests.support.provider_apis.common import (
    BROKEN,
    RATE_LIMITED,
    Accepted,
    ApiState,
    address_of,
    counted,
    trouble,
    valid_address,
)

API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.com"
# The parameters of the messages API; h: (headers), v: (user variables), o: (options) and t: (template)
# are prefixes. Mailgun ignores a parameter it does not know; this fake refuses it, to catch a misspelt name.
FIELDS = {"from", "to", "cc", "bcc", "subject", "text", "html", "amp-html", "template", "recipient-variables"}
PREFIXES = ("h:", "v:", "o:", "t:")
MAX_RECIPIENTS = 1000
RECIPIENT_VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")


def error(message: str, status: int = 400, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def authorised(request: Request, key: str) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return False
    return decoded == f"api:{key}"


def validate(fields: list[tuple[str, str]]) -> str | None:
    names = [name for name, _ in fields]
    for name in names:
        if name not in FIELDS and not name.startswith(PREFIXES):
            return f"unknown parameter {name!r}"
    values = dict(fields)
    for required in ("from", "to", "subject"):
        if not values.get(required):
            return f"{required} parameter is missing"
    if not any(values.get(part) for part in ("text", "html", "template")):
        return "Need at least one of 'text', 'html' or 'template' parameters specified"
    if not valid_address(values["from"]):
        return "from parameter is not a valid address. please check documentation"
    if not all(valid_address(v) for n, v in fields if n == "to"):
        return "to parameter is not a valid address. please check documentation"
    return validate_batch(fields)


def validate_batch(fields: list[tuple[str, str]]) -> str | None:
    values = dict(fields)
    recipients = [address_of(v) for n, v in fields if n == "to"]
    if len(recipients) > MAX_RECIPIENTS:
        return f"Too many recipients: {len(recipients)}, the maximum is {MAX_RECIPIENTS}"
    if "recipient-variables" in values:
        try:
            variables = json.loads(values["recipient-variables"])
        except ValueError:
            return "recipient-variables parameter is not a valid JSON"
        if not isinstance(variables, dict) or not all(isinstance(v, dict) for v in variables.values()):
            return "recipient-variables must be a JSON object of objects"
        if set(variables) != set(recipients):
            return "recipient-variables must hold one entry per recipient address"
    elif len(recipients) > 1:
        # Without variables Mailgun sends one message with every address in To: never what we mean.
        return "batch without recipient-variables would show every recipient to every other"
    return None


def personalise(fields: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The fields of each recipient's own message, recipient variables substituted."""
    values = dict(fields)
    to_fields = [v for n, v in fields if n == "to"]
    if "recipient-variables" not in values:
        return [fields]
    variables = json.loads(values["recipient-variables"])
    shared = [(n, v) for n, v in fields if n not in ("to", "recipient-variables")]
    out = []
    for to in to_fields:
        own = variables[address_of(to)]

        def sub(text: str, own: dict[str, Any] = own) -> str:
            return RECIPIENT_VARIABLE.sub(lambda m: str(own.get(m.group(1), m.group(0))), text)

        out.append([("to", to), *((n, v if n == "from" else sub(v)) for n, v in shared)])
    return out


def accept_all(state: ApiState, messages: list[list[tuple[str, str]]], message_id: str) -> None:
    for own in messages:
        values = dict(own)
        state.accept(
            Accepted(
                provider_id=message_id,
                to=address_of(values["to"]),
                sender=values["from"],
                subject=values["subject"],
                headers={n[2:]: v for n, v in own if n.startswith("h:")},
                html=values.get("html"),
                text=values.get("text"),
                raw=own,
            )
        )


def mailgun_app(state: ApiState, *, domain: str = DOMAIN) -> Starlette:
    async def messages(request: Request) -> Response:
        if not authorised(request, state.key):
            return PlainTextResponse("Forbidden", status_code=401)
        if request.path_params["domain"] != domain:
            return error(f"Domain not found: {request.path_params['domain']}", 404)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return error("Request body must be multipart/form-data or application/x-www-form-urlencoded")
        # A batch has a field per recipient (up to 1000) besides the message's own.
        form = await request.form(max_fields=5000)
        fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
        problem = validate(fields)
        if problem is not None:
            return error(problem)
        state.received.append(fields)
        messages = personalise(fields)
        if state.handover is not None:
            state.handover.request([dict(m).get(f"v:{DELIVERY_TAG}", "") for m in messages])
        recipients = [address_of(v) for n, v in fields if n == "to"]
        problem = trouble(recipients)
        if problem == RATE_LIMITED:
            return error("Too many requests", 429, **{"Retry-After": "20"})
        if problem == BROKEN:
            return error("Internal Server Error", 500)
        message_id = f"{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{domain}"
        accept_all(state, messages, message_id)
        return JSONResponse({"id": f"<{message_id}>", "message": "Queued. Thank you."})

    async def domain_info(request: Request) -> Response:
        if not authorised(request, state.key):
            return PlainTextResponse("Forbidden", status_code=401)
        name = request.path_params["domain"]
        if name != domain:
            return error("Domain not found", 404)
        return JSONResponse(
            {
                "domain": {"name": name, "state": "active", "type": "custom", "spam_action": "disabled"},
                "receiving_dns_records": [],
                "sending_dns_records": [],
            }
        )

    return Starlette(
        routes=[
            Route("/v3/{domain}/messages", counted(state, messages), methods=["POST"]),
            Route("/v3/domains/{domain}", domain_info, methods=["GET"]),
        ]
    )


def webhook(accepted: Accepted, event: str = "delivered") -> bytes:
    """The webhooks v3 body Mailgun posts about a message it accepted: the user variables come back in
    ``user-variables``, and only To, From, Subject and Message-ID of its headers (unsigned: our parser is
    built without a signing key)."""
    fields: list[tuple[str, str]] = accepted.raw
    now = time.time()
    body: dict[str, Any] = {
        "signature": {"timestamp": str(int(now)), "token": secrets.token_hex(25), "signature": "0" * 64},
        "event-data": {
            "id": secrets.token_urlsafe(16),
            "timestamp": now,
            "log-level": "info",
            "event": event,
            "delivery-status": {"code": 250, "message": "OK", "description": "", "attempt-no": 1},
            "message": {
                "headers": {
                    "to": dict(fields)["to"],
                    "message-id": accepted.provider_id,
                    "from": accepted.sender,
                    "subject": accepted.subject,
                },
                "attachments": [],
                "size": 1024,
            },
            "recipient": accepted.to,
            "recipient-domain": accepted.to.partition("@")[2],
            "tags": [],
            "user-variables": {n[2:]: v for n, v in fields if n.startswith("v:")},
        },
    }
    return json.dumps(body).encode()
