"""``resend``: Resend's batch API, ``POST /emails/batch`` (up to 100 emails per request), over httpx.

Each request carries up to 100 fully rendered emails; a larger batch goes out in several requests with
bounded concurrency and the hand-over of :func:`emailkit.providers.http_api.send_in_requests`. Requests use
``x-batch-validation: permissive``: Resend then sends the valid emails and lists the invalid ones in
``errors`` by index, so one bad address fails alone instead of failing the hundred (strict mode, the default,
refuses the whole request). Authentication is ``Authorization: Bearer <key>``; a sending-only key is enough.

Correlation: the delivery id and the message's metadata travel as ``tags``, which Resend echoes in every
webhook event's ``data.tags`` (what our webhook parser reads), and as the ``X-Emailkit-Delivery`` header.
Our other headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, ...) go in ``headers``.

Classification: in a 200 answer, an email listed in ``errors`` failed validation for good; the others are
sent, their ids (``data``, in the order of the accepted emails) being the provider ids its webhooks report as
``email_id``. A non-200 answer applies to every email of the request: 429 (rate limit or daily/monthly quota,
with ``retry-after``), 5xx and timeouts are transient; 401/403 (a missing, invalid or revoked key, or a
domain not verified for sending) say nothing about the recipient and clear up once the account is fixed, so
they are transient too and the campaign's error budget pauses it with the reason; other 4xx (validation,
451 security) are permanent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from emailkit.domain.ports.provider import (
    DELIVERY_TAG,
    CommitHook,
    OutgoingMessage,
    ProbeResult,
    ResultHook,
    SendResult,
    http_status_is_transient,
)
from emailkit.providers.http_api import (
    HttpApiProvider,
    Prepared,
    body_text,
    carried_headers,
    check_keys,
    failed_all,
    json_body,
    mailbox,
    pool_concurrency,
    required_text,
    retry_after,
    send_in_requests,
    sender_base_url,
)

LABEL = "Resend"
DEFAULT_BASE_URL = "https://api.resend.com"
MAX_BATCH = 100
_TAG_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def _tag(value: str) -> str:
    """Resend tag names and values allow only ASCII letters, digits, '_' and '-', at most 256 characters."""
    return _TAG_INVALID.sub("_", value)[:256] or "_"


def _error(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and body.get("message"):
        name = f"{body['name']}: " if body.get("name") else ""
        return f"{name}{str(body['message']).strip()}"
    return body_text(response)


def email_item(message: OutgoingMessage) -> dict[str, Any]:
    tags = [{"name": DELIVERY_TAG, "value": message.delivery_id}]
    tags += [{"name": _tag(k), "value": _tag(v)} for k, v in message.tags.items() if k != DELIVERY_TAG]
    item: dict[str, Any] = {
        "from": mailbox(message.from_),
        "to": [mailbox(message.to)],
        "subject": message.subject,
        "headers": carried_headers(message),
        "tags": tags,
    }
    if message.html is not None:
        item["html"] = message.html
    if message.text is not None:
        item["text"] = message.text
    if message.reply_to is not None:
        item["reply_to"] = mailbox(message.reply_to)
    return item


class ResendProvider(HttpApiProvider):
    # Five requests per hand-over: a campaign's chunk goes out in full requests, with five in flight.
    max_batch_size = 500

    label = LABEL

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 10,
        timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        batch: bool = True,
    ) -> None:
        """``batch=False`` sends each message in a request of its own (for comparison)."""
        self.per_request = MAX_BATCH if batch else 1
        super().__init__(base_url=base_url, concurrency=concurrency, timeout=timeout, client=client)
        self.url = f"{self.base_url}/emails/batch"
        self._auth_header = {"Authorization": f"Bearer {api_key}"}
        self._headers = {
            **self._auth_header,
            "Content-Type": "application/json",
            "x-batch-validation": "permissive",
        }

    async def _post(self, chunk: Sequence[Prepared[dict[str, Any]]]) -> list[SendResult]:
        body = json.dumps([item for _, item in chunk], ensure_ascii=False, separators=(",", ":")).encode()
        response = await self._client.post(self.url, content=body, headers=self._headers)
        status = response.status_code
        answer = json_body(response)
        if status == 200 and isinstance(answer, dict):
            return self._per_email(chunk, answer)
        transient = http_status_is_transient(status) or status in (401, 403)
        return failed_all(
            chunk,
            f"{LABEL} {status}: {_error(response)}",
            transient=transient,
            retry_after=retry_after(response.headers) if transient else None,
        )

    def _per_email(
        self, chunk: Sequence[Prepared[dict[str, Any]]], answer: dict[str, Any]
    ) -> list[SendResult]:
        refused: dict[int, str] = {}
        for entry in answer.get("errors") or ():
            if isinstance(entry, dict) and isinstance(entry.get("index"), int):
                refused[entry["index"]] = str(entry.get("message") or "refused").strip()
        ids = [entry.get("id") if isinstance(entry, dict) else None for entry in answer.get("data") or ()]
        accepted = len(chunk) - len(refused)
        # ``data`` lists the accepted emails in request order; if its length disagrees, they were still
        # accepted, only the ids cannot be matched up (our own tags correlate the events anyway).
        matched = iter(ids if len(ids) == accepted else [None] * accepted)
        results = []
        for index, (message, _) in enumerate(chunk):
            if index in refused:
                results.append(
                    SendResult.failed(message.delivery_id, f"{LABEL}: {refused[index]}", transient=False)
                )
            else:
                email_id = next(matched)
                results.append(SendResult.sent(message.delivery_id, str(email_id) if email_id else None))
        return results

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        return await send_in_requests(
            messages,
            label=LABEL,
            prepare=email_item,
            per_request=self.per_request,
            slots=self._slots,
            post=self._post,
            on_commit=on_commit,
            on_result=on_result,
        )

    async def probe(self) -> ProbeResult:
        """``GET /domains``: the key is accepted. A sending-only key (the kind to give a sender) may not list
        domains and is answered 401 ``restricted_api_key``, which still proves it is valid."""

        def describe(response: httpx.Response) -> tuple[bool, str]:
            body = json_body(response)
            if response.status_code == 200 and isinstance(body, dict):
                domains = [d.get("name") for d in body.get("data") or () if isinstance(d, dict)]
                return True, "domains: " + (", ".join(str(d) for d in domains if d) or "none")
            if isinstance(body, dict) and body.get("name") == "restricted_api_key":
                return True, f"sending-only key ({_error(response)})"
            return False, _error(response)

        return await self._probe("/domains", describe, headers=self._auth_header)


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> ResendProvider:
    """Settings ``{baseUrl?}``, credentials ``{apiKey}``."""
    check_keys(settings, ("baseUrl",), what="settings")
    check_keys(credentials, ("apiKey",), what="credentials")
    return ResendProvider(
        api_key=required_text(credentials, "apiKey"),
        base_url=sender_base_url(settings, DEFAULT_BASE_URL),
        concurrency=pool_concurrency(pool_size),
    )
