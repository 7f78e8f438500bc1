"""``postmark``: Postmark's batch API, ``POST /email/batch`` (up to 500 messages per request), over httpx.

Each request carries up to 500 fully rendered messages; a batch larger than that goes out in several
requests with bounded concurrency and the hand-over of :func:`emailkit.providers.http_api.send_in_requests`
(each request committed right before it is sent, reported before its slot is reused). Authentication is the
``X-Postmark-Server-Token`` header; ``messageStream`` picks the stream (``outbound`` for transactional mail,
a broadcast stream for campaigns).

Correlation: the delivery id and the message's metadata travel in ``Metadata``, which Postmark echoes in
every webhook record (what our webhook parser reads), and as the ``X-Emailkit-Delivery`` header. Our other
headers (List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, ...) go in ``Headers``.

Classification: a 200 answer holds one result per message, in order, each with its own ``ErrorCode``: 0 is
success (``MessageID`` is the provider id, the one its webhooks report); 406 (an inactive recipient: it
bounced hard, complained or was suppressed) and 300 (an invalid message, e.g. a bad address) fail that
message for good. Codes about the account rather than the recipient (10 bad server token, 100 maintenance,
400/401 sender signature missing or unconfirmed, 405 out of credits, 412 account pending, 413 account may
not send, 429 rate limited, 1235 unknown message stream) clear up once the account is fixed, so they are
transient: the campaign's error budget pauses it with the reason. A non-200 answer applies to every message
of the request: 401 and 429 (with ``Retry-After`` when given), 5xx and timeouts transient, 422 by its
``ErrorCode`` as above.
"""

from __future__ import annotations

import json
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
    optional_text,
    pool_concurrency,
    required_text,
    retry_after,
    send_in_requests,
    sender_base_url,
)

LABEL = "Postmark"
DEFAULT_BASE_URL = "https://api.postmarkapp.com"
DEFAULT_STREAM = "outbound"
MAX_BATCH = 500
# https://postmarkapp.com/developer/api/overview#error-codes: the ones that are about the account.
ACCOUNT_ERROR_CODES = frozenset({10, 100, 400, 401, 405, 412, 413, 429, 1235})
# Postmark's documented Metadata limits: 10 fields, names up to 20 characters, values up to 80.
_METADATA_FIELDS = 10
_METADATA_NAME = 20
_METADATA_VALUE = 80


def _metadata(message: OutgoingMessage) -> dict[str, str]:
    # The delivery id first so it is never the field that does not fit; others that exceed Postmark's limits
    # are left out rather than truncated into something that looks like a real value.
    metadata = {DELIVERY_TAG: message.delivery_id}
    for name, value in message.tags.items():
        if len(metadata) >= _METADATA_FIELDS:
            break
        if name != DELIVERY_TAG and 0 < len(name) <= _METADATA_NAME and len(value) <= _METADATA_VALUE:
            metadata[name] = value
    return metadata


def _error(body: Any) -> tuple[int | None, str]:
    if not isinstance(body, dict):
        return None, ""
    code = body.get("ErrorCode")
    return (code if isinstance(code, int) else None), str(body.get("Message") or "").strip()


def code_is_transient(code: int | None) -> bool:
    return code in ACCOUNT_ERROR_CODES


class PostmarkProvider(HttpApiProvider):
    max_batch_size = MAX_BATCH

    label = LABEL

    def __init__(
        self,
        *,
        server_token: str,
        message_stream: str = DEFAULT_STREAM,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 10,
        timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        batch: bool = True,
    ) -> None:
        """``batch=False`` sends each message in a request of its own (for comparison)."""
        self.per_request = MAX_BATCH if batch else 1
        super().__init__(base_url=base_url, concurrency=concurrency, timeout=timeout, client=client)
        self.url = f"{self.base_url}/email/batch"
        self.message_stream = message_stream
        self._headers = {
            "X-Postmark-Server-Token": server_token,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def _item(self, message: OutgoingMessage) -> dict[str, Any]:
        item: dict[str, Any] = {
            "From": mailbox(message.from_),
            "To": mailbox(message.to),
            "Subject": message.subject,
            "MessageStream": self.message_stream,
            "Metadata": _metadata(message),
            "Headers": [{"Name": n, "Value": v} for n, v in carried_headers(message).items()],
        }
        if message.html is not None:
            item["HtmlBody"] = message.html
        if message.text is not None:
            item["TextBody"] = message.text
        if message.reply_to is not None:
            item["ReplyTo"] = mailbox(message.reply_to)
        return item

    async def _post(self, chunk: Sequence[Prepared[dict[str, Any]]]) -> list[SendResult]:
        body = json.dumps([item for _, item in chunk], ensure_ascii=False, separators=(",", ":")).encode()
        response = await self._client.post(self.url, content=body, headers=self._headers)
        status = response.status_code
        answer = json_body(response)
        if status == 200 and isinstance(answer, list):
            entries = [answer[i] if i < len(answer) else None for i in range(len(chunk))]
            return [
                self._one(message, entry, len(answer), len(chunk))
                for (message, _), entry in zip(chunk, entries, strict=True)
            ]
        code, text = _error(answer)
        transient = http_status_is_transient(status) or status == 401 or code_is_transient(code)
        detail = f"{text} (ErrorCode {code})" if code is not None else (text or body_text(response))
        return failed_all(
            chunk,
            f"{LABEL} {status}: {detail}",
            transient=transient,
            retry_after=retry_after(response.headers) if transient else None,
        )

    def _one(self, message: OutgoingMessage, entry: Any, answered: int, sent: int) -> SendResult:
        if entry is None:
            # Not knowing whether Postmark took it, retrying could mail the person twice.
            return SendResult.failed(
                message.delivery_id,
                f"{LABEL} 200: {answered} results for {sent} messages; this one is unaccounted for",
                transient=False,
            )
        code, text = _error(entry)
        if code == 0:
            message_id = entry.get("MessageID")
            return SendResult.sent(message.delivery_id, str(message_id) if message_id else None)
        return SendResult.failed(
            message.delivery_id,
            f"{LABEL} ErrorCode {code}: {text}",
            transient=code_is_transient(code),
        )

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
            prepare=self._item,
            per_request=self.per_request,
            slots=self._slots,
            post=self._post,
            on_commit=on_commit,
            on_result=on_result,
        )

    async def probe(self) -> ProbeResult:
        """``GET /server``: the server token is accepted; reports the server's name."""

        def describe(response: httpx.Response) -> tuple[bool, str]:
            body = json_body(response)
            if response.status_code == 200 and isinstance(body, dict):
                return True, f"server {body.get('Name') or body.get('ID') or '?'}"
            code, text = _error(body)
            return False, (f"{text} (ErrorCode {code})" if code is not None else text or body_text(response))

        return await self._probe(
            "/server", describe, headers={k: v for k, v in self._headers.items() if k != "Content-Type"}
        )


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> PostmarkProvider:
    """Settings ``{messageStream?, baseUrl?}``, credentials ``{serverToken}``."""
    check_keys(settings, ("messageStream", "baseUrl"), what="settings")
    check_keys(credentials, ("serverToken",), what="credentials")
    return PostmarkProvider(
        server_token=required_text(credentials, "serverToken"),
        message_stream=optional_text(settings, "messageStream", DEFAULT_STREAM),
        base_url=sender_base_url(settings, DEFAULT_BASE_URL),
        concurrency=pool_concurrency(pool_size),
    )
