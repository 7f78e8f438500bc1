"""SendGrid's v3 ``POST /v3/mail/send`` as documented: the request shape it checks (personalizations, at most
1000, with ``substitutions`` of at most 10,000 bytes each; reserved headers; text/plain first), 202 +
X-Message-Id, 400 error JSON, 401, 429 with rate-limit headers. Besides each request as it came
(``accepted``), it keeps what each recipient would get (``delivered``): the personalization's subject and
headers over the shared content, each substitution key replaced by the person's value wherever it occurs in
the content, subject and reply-to, as SendGrid does."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emailkit.domain.ports.provider import DELIVERY_TAG
from tests.support.handover import HandoverLog
from tests.support.provider_apis.common import Accepted, valid_address

API_KEY = "SG.test-key.0123456789"
PERSONALIZATION_KEYS = {
    "to",
    "cc",
    "bcc",
    "subject",
    "headers",
    "substitutions",
    "dynamic_template_data",
    "custom_args",
    "send_at",
    "from",
}
TOP_LEVEL_KEYS = {
    "personalizations", "from", "reply_to", "reply_to_list", "subject", "content", "attachments", "template_id",
    "headers", "categories", "custom_args", "send_at", "batch_id", "asm", "ip_pool_name", "mail_settings",
    "tracking_settings",
}  # fmt: skip
RESERVED_HEADERS = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}  # fmt: skip


def sg_error(message: str, field: str | None = None, status: int = 400, **headers: str) -> JSONResponse:
    help_url = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html" if status == 400 else None
    body = {"errors": [{"message": message, "field": field, "help": help_url}]}
    return JSONResponse(body, status_code=status, headers=headers)


def validate(body: Any) -> tuple[str, str | None] | None:
    """The first documented-rule violation in a request body, as (message, field)."""
    if not isinstance(body, dict):
        return "Bad Request", None
    unknown = set(body) - TOP_LEVEL_KEYS
    if unknown:
        return f"Unknown field {sorted(unknown)[0]}", sorted(unknown)[0]
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return (
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        )
    if len(personalizations) > 1000:
        return "The personalizations field must have no more than 1000 items.", "personalizations"
    for i, p in enumerate(personalizations):
        problem = validate_personalization(i, p, has_subject=bool(body.get("subject")))
        if problem is not None:
            return problem
    if sum(len(p["to"]) for p in personalizations) > 1000:
        return "The total number of recipients must be no more than 1000.", "personalizations"
    if not isinstance(body.get("from"), dict) or "@" not in str(body["from"].get("email", "")):
        return "The from object must be provided for every email send.", "from.email"
    return validate_content(body.get("content"))


def validate_personalization(
    i: int, p: dict[str, Any], *, has_subject: bool
) -> tuple[str, str | None] | None:
    if set(p) - PERSONALIZATION_KEYS:
        return "Unknown personalization field", f"personalizations.{i}"
    if not p.get("to"):
        return "The to array is required for all personalization objects", f"personalizations.{i}.to"
    for j, to in enumerate(p["to"]):
        if not isinstance(to, dict) or not valid_address(str(to.get("email", ""))):
            return "Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"
    for name, value in (p.get("headers") or {}).items():
        if name.lower() in RESERVED_HEADERS or not isinstance(value, str):
            return "Invalid type or reserved header", f"personalizations.{i}.headers"
    substitutions = p.get("substitutions") or {}
    if not isinstance(substitutions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in substitutions.items()
    ):
        return "Substitutions must be strings", f"personalizations.{i}.substitutions"
    if sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items()) > 10_000:
        return (
            "The total collective size of your substitutions may not exceed 10,000 bytes per personalization.",
            f"personalizations.{i}.substitutions",
        )
    args = p.get("custom_args") or {}
    if not all(isinstance(v, str) for v in args.values()) or len(json.dumps(args)) > 10_000:
        return "Custom args must be strings and under 10000 bytes", f"personalizations.{i}.custom_args"
    if "subject" not in p and not has_subject:
        return "The subject is required.", "subject"
    return None


def validate_content(content: Any) -> tuple[str, str | None] | None:
    if not isinstance(content, list) or not content:
        return "Unless a valid template_id is provided, the content parameter is required.", "content"
    types = [c.get("type") for c in content]
    if any(not c.get("value") for c in content):
        return "The content value must be a string at least one character in length.", "content.0.value"
    if "text/plain" in types and types.index("text/plain") != 0:
        return "If present, text/plain content must be first.", "content.0.type"
    return None


@dataclass
class FakeSendGridState:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    reset_at: int = 0
    # Seconds each request takes to answer (so concurrent requests overlap as against the real API).
    delay: float = 0.005
    # Each request's delivery ids as it arrives, in the order of the client's commits and reports.
    handover: HandoverLog | None = None
    # What each recipient gets, substitutions applied.
    delivered: list[Accepted] = field(default_factory=list)


def sendgrid_app(state: FakeSendGridState) -> Starlette:
    async def mail_send(request: Request) -> Response:
        state.in_flight += 1
        state.requests += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            # Yield so concurrent requests overlap the way they do against the real API.
            await asyncio.sleep(state.delay)
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return sg_error(
                    "The provided authorization grant is invalid, expired, or revoked", status=401
                )
            if request.headers.get("content-type") != "application/json":
                return sg_error("Content-Type should be application/json.", status=415)
            try:
                body = json.loads(await request.body())
            except ValueError:
                return sg_error("Bad Request")
            problem = validate(body)
            if problem is not None:
                return sg_error(*problem)
            if state.handover is not None:
                state.handover.request(p["custom_args"][DELIVERY_TAG] for p in body["personalizations"])
            emails = [to["email"] for p in body["personalizations"] for to in p["to"]]
            if any(e.startswith("limited@") for e in emails):
                state.reset_at = int(time.time()) + 30
                return sg_error(
                    "too many requests",
                    status=429,
                    **{
                        "X-RateLimit-Limit": "600",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(state.reset_at),
                    },
                )
            if any(e.startswith("broken@") for e in emails):
                return sg_error("Internal server error", status=500)
            state.accepted.append(body)
            message_id = secrets.token_urlsafe(16)
            state.delivered += expand(body, message_id)
            return Response(status_code=202, headers={"X-Message-Id": message_id})
        finally:
            state.in_flight -= 1

    return Starlette(routes=[Route("/v3/mail/send", mail_send, methods=["POST"])])


@asynccontextmanager
async def sendgrid_server() -> AsyncIterator[tuple[str, FakeSendGridState]]:
    state = FakeSendGridState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(sendgrid_app(state), log_level="warning", lifespan="off"))
    # Listening before uvicorn takes over: early connections wait in the backlog instead of being refused.
    sock.listen(128)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    finally:
        server.should_exit = True
        await task
        sock.close()


def substitute(text: str | None, substitutions: dict[str, str]) -> str | None:
    if text is None:
        return None
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def expand(body: dict[str, Any], message_id: str) -> list[Accepted]:
    """What SendGrid sends each recipient of an accepted request."""
    content = {c["type"]: c["value"] for c in body["content"]}
    out = []
    for p in body["personalizations"]:
        subs = p.get("substitutions") or {}
        sender = body["from"]
        reply_to = body.get("reply_to")
        headers = dict(p.get("headers") or {})
        if reply_to is not None:
            headers["Reply-To"] = json.dumps(reply_to, sort_keys=True)
        for to in p["to"]:
            out.append(
                Accepted(
                    provider_id=message_id,
                    to=to["email"].lower(),
                    sender=f"{sender.get('name', '')} <{sender['email']}>",
                    subject=substitute(p.get("subject") or body.get("subject"), subs) or "",
                    headers={k: substitute(v, subs) or "" for k, v in headers.items()},
                    html=substitute(content.get("text/html"), subs),
                    text=substitute(content.get("text/plain"), subs),
                    raw={"to": to, "custom_args": p.get("custom_args") or {}},
                )
            )
    return out
