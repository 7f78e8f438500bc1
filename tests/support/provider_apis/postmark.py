"""Postmark's batch API (``POST /email/batch``) and ``GET /server``, as documented: the
``X-Postmark-Server-Token`` header (401 with ErrorCode 10 otherwise), JSON only (422 ErrorCode 409), at most
500 messages (422 ErrorCode 410), and a 200 answer holding one ``{ErrorCode, Message, MessageID, SubmittedAt,
To}`` per message in order: 0 for accepted, 300 for an invalid message, 400 for a From that is not a sender
signature, 406 for an inactive recipient, 1235 for an unknown message stream."""

from __future__ import annotations

import json
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

SERVER_TOKEN = "f3b0d2a4-8c1e-4a57-9a8e-2d6f5c9b1e70"
STREAMS = {"outbound", "broadcast"}
SIGNATURE_DOMAIN = "news.example.com"
# Recipients Postmark has marked inactive (a hard bounce or spam complaint earlier).
INACTIVE = "inactive@example.org"
MESSAGE_KEYS = {
    "From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo", "Metadata", "Headers",
    "TrackOpens", "TrackLinks", "Attachments", "MessageStream",
}  # fmt: skip


def error(code: int, message: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status)


def check_message(item: Any) -> tuple[int, str] | None:
    """(ErrorCode, Message) for a message Postmark would refuse, None for one it takes."""
    if not isinstance(item, dict):
        return 402, "Received invalid JSON input."
    unknown = set(item) - MESSAGE_KEYS
    if unknown:
        return 403, f"Incompatible JSON input: unknown field {sorted(unknown)[0]!r}."
    if not item.get("From"):
        return 300, "Error parsing 'From': Value cannot be null or empty."
    if not item.get("To"):
        return 300, "Zero recipients specified"
    if not item.get("HtmlBody") and not item.get("TextBody"):
        return 300, "Provide either email TextBody or HtmlBody or both."
    if not valid_address(item["To"]):
        return 300, f"Invalid 'To' address: '{item['To']}'."
    if not address_of(item["From"]).endswith("@" + SIGNATURE_DOMAIN):
        return 400, (
            f"The 'From' address you supplied ({item['From']}) is not a Sender Signature on your account. "
            "Please add and confirm this address in order to be able to use it in the 'From' field of your "
            "messages."
        )
    refused = check_fields(item)
    if refused is not None:
        return refused
    if item.get("MessageStream", "outbound") not in STREAMS:
        return 1235, "The message stream for the provided 'ID' was not found."
    if address_of(item["To"]) == INACTIVE:
        return 406, (
            "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: "
            f"{INACTIVE}. Inactive recipients are ones that have generated a hard bounce, a spam complaint, "
            "or a manual suppression."
        )
    return None


def check_fields(item: dict[str, Any]) -> tuple[int, str] | None:
    headers = item.get("Headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, dict) and set(h) == {"Name", "Value"} and all(isinstance(v, str) for v in h.values())
        for h in headers
    ):
        return 403, "Incompatible JSON input: Headers must be a list of {Name, Value}."
    metadata = item.get("Metadata", {})
    if not isinstance(metadata, dict) or len(metadata) > 10:
        return 300, "Metadata may have at most 10 fields."
    for name, value in metadata.items():
        if len(name) > 20 or not isinstance(value, str) or len(value) > 80:
            return 300, "Metadata field names are limited to 20 characters and values to 80."
    return None


def auth_error(request: Request, key: str) -> JSONResponse | None:
    token = request.headers.get("x-postmark-server-token")
    if token is None:
        return error(
            10,
            "No Account or Server API tokens were supplied in the HTTP headers. Please add a header for "
            "either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            401,
        )
    if token != key:
        return error(
            10,
            "The Server Token you provided in the X-Postmark-Server-Token request header was invalid. "
            "Please verify that you are using a valid token.",
            401,
        )
    return None


def answer_messages(state: ApiState, items: list[Any]) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for item in items:
        refusal = check_message(item)
        if refusal is not None:
            answers.append({"ErrorCode": refusal[0], "Message": refusal[1]})
            continue
        message_id = new_id()
        state.accept(
            Accepted(
                provider_id=message_id,
                to=address_of(item["To"]),
                sender=item["From"],
                subject=item.get("Subject", ""),
                headers={h["Name"]: h["Value"] for h in item.get("Headers", [])},
                html=item.get("HtmlBody"),
                text=item.get("TextBody"),
                raw=item,
            )
        )
        answers.append(
            {
                "To": item["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
        )
    return answers


def postmark_app(state: ApiState) -> Starlette:
    async def batch(request: Request) -> Response:
        refused = auth_error(request, state.key)
        if refused is not None:
            return refused
        if not request.headers.get("content-type", "").startswith("application/json"):
            return error(409, "JSON required")
        try:
            items = json.loads(await request.body())
        except ValueError:
            return error(402, "Received invalid JSON input.")
        if not isinstance(items, list):
            return error(402, "Received invalid JSON input.")
        if len(items) > 500:
            return error(410, "Too many batch messages (max 500).")
        if state.handover is not None:
            state.handover.request(
                str(i.get("Metadata", {}).get(DELIVERY_TAG, "")) for i in items if isinstance(i, dict)
            )
        recipients = [address_of(str(i.get("To", ""))) for i in items if isinstance(i, dict)]
        problem = trouble(recipients)
        if problem == RATE_LIMITED:
            return error(429, "Rate limit exceeded.", 429)
        if problem == BROKEN:
            return error(0, "Internal Server Error", 500)
        answers = answer_messages(state, items)
        return JSONResponse(answers)

    async def server(request: Request) -> Response:
        refused = auth_error(request, state.key)
        if refused is not None:
            return refused
        return JSONResponse({"ID": 1, "Name": "Newsletters", "ApiTokens": [state.key], "Color": "blue"})

    return Starlette(
        routes=[
            Route("/email/batch", counted(state, batch), methods=["POST"]),
            Route("/server", server, methods=["GET"]),
        ]
    )


def webhook(accepted: Accepted) -> bytes:
    """The Delivery record Postmark posts about a message it accepted: its Metadata comes back as sent."""
    item = accepted.raw
    record = {
        "RecordType": "Delivery",
        "ServerID": 1,
        "MessageStream": item.get("MessageStream", "outbound"),
        "MessageID": accepted.provider_id,
        "Recipient": accepted.to,
        "Tag": item.get("Tag", ""),
        "DeliveredAt": datetime.now(UTC).isoformat(),
        "Details": "smtp;250 2.0.0 OK",
        "Metadata": item.get("Metadata", {}),
    }
    return json.dumps(record).encode()
