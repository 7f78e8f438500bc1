"""``brevo``: Brevo's (ex-Sendinblue) transactional API, ``POST /v3/smtp/email``, over httpx.

One message per request (its content is personal), with bounded concurrency and the hand-over of
:func:`emailkit.providers.http_api.send_in_requests`. Authentication is the ``api-key`` header.

Why not Brevo's batch send (``messageVersions``, up to 1000 versions per request): a version can override
only its recipients, ``params``, subject, Reply-To and HTML; the ``headers`` are the request's, shared by
every version. Each person's List-Unsubscribe carries their own one-click URL (RFC 8058), and the
``X-Mailin-custom`` header is what ties Brevo's events to the delivery, so a shared value would unsubscribe
the wrong person and misfile every event. Brevo documents no substitution of ``params`` into headers, and
its ``{{ params.x }}`` templating would also read any ``{{`` in a campaign's own HTML. One request per
message keeps what each person gets exactly what we rendered.

Correlation: the delivery id and the message's metadata travel as a JSON object in the ``X-Mailin-custom``
header, which Brevo echoes verbatim in every webhook event (our webhook parser decodes it into the event's
metadata), and as the ``X-Emailkit-Delivery`` header. Our other headers (List-Unsubscribe,
List-Unsubscribe-Post, List-Id, Message-ID, ...) go in ``headers`` too.

Classification: 201 is success (``messageId``, angle brackets included as Brevo's webhooks report it, is the
provider id). 429 (with the wait from ``x-sib-ratelimit-reset``), 5xx and timeouts are transient. 401 (a wrong
key), 402 (not enough credits) and 403 (permission denied, e.g. a sending IP not authorised on the account)
say nothing about the recipient and clear up once the account is fixed, so they are transient too: the
campaign's error budget pauses it with the reason. 400 (``invalid_parameter``, ``missing_parameter``, ...)
and other 4xx are permanent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from emailkit.domain.ports.provider import (
    DELIVERY_TAG,
    Address,
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
    clean,
    email_of,
    json_body,
    pool_concurrency,
    required_text,
    retry_after,
    send_in_requests,
    sender_base_url,
)

LABEL = "Brevo"
DEFAULT_BASE_URL = "https://api.brevo.com"
CUSTOM_HEADER = "X-Mailin-custom"
_ACCOUNT_STATUSES = frozenset({401, 402, 403})


def _contact(address: Address) -> dict[str, str]:
    contact = {"email": email_of(address)}
    name = clean(address.name).strip()
    if name:
        contact["name"] = name
    return contact


def _error(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and body.get("message"):
        code = f"{body['code']}: " if body.get("code") else ""
        return f"{code}{str(body['message']).strip()}"
    return body_text(response)


def request_body(message: OutgoingMessage) -> bytes:
    custom = {str(k): str(v) for k, v in message.tags.items()}
    custom[DELIVERY_TAG] = message.delivery_id
    headers = carried_headers(message, reserved=frozenset({CUSTOM_HEADER.lower()}))
    headers[CUSTOM_HEADER] = json.dumps(custom, ensure_ascii=True, separators=(",", ":"))
    payload: dict[str, Any] = {
        "sender": _contact(message.from_),
        "to": [_contact(message.to)],
        "subject": message.subject,
        "headers": headers,
    }
    if message.html is not None:
        payload["htmlContent"] = message.html
    if message.text is not None:
        payload["textContent"] = message.text
    if message.reply_to is not None:
        payload["replyTo"] = _contact(message.reply_to)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class BrevoProvider(HttpApiProvider):
    max_batch_size = 200

    label = LABEL

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 10,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url=base_url, concurrency=concurrency, timeout=timeout, client=client)
        self.url = f"{self.base_url}/v3/smtp/email"
        self._auth_header = {"api-key": api_key, "Accept": "application/json"}
        self._headers = {**self._auth_header, "Content-Type": "application/json"}

    async def _post(self, chunk: Sequence[Prepared[bytes]]) -> list[SendResult]:
        ((message, body),) = chunk
        response = await self._client.post(self.url, content=body, headers=self._headers)
        status = response.status_code
        if 200 <= status < 300:
            answer = json_body(response)
            message_id = answer.get("messageId") if isinstance(answer, dict) else None
            return [SendResult.sent(message.delivery_id, str(message_id) if message_id else None)]
        transient = http_status_is_transient(status) or status in _ACCOUNT_STATUSES
        return [
            SendResult.failed(
                message.delivery_id,
                f"{LABEL} {status}: {_error(response)}",
                transient=transient,
                retry_after=retry_after(response.headers) if transient else None,
            )
        ]

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
            prepare=request_body,
            per_request=1,
            slots=self._slots,
            post=self._post,
            on_commit=on_commit,
            on_result=on_result,
        )

    async def probe(self) -> ProbeResult:
        """``GET /v3/account``: the key is accepted; reports the account's email."""

        def describe(response: httpx.Response) -> tuple[bool, str]:
            body = json_body(response)
            if response.status_code == 200 and isinstance(body, dict):
                return True, f"account {body.get('email') or body.get('companyName') or '?'}"
            return False, _error(response)

        return await self._probe("/v3/account", describe, headers=self._auth_header)


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> BrevoProvider:
    """Settings ``{baseUrl?}``, credentials ``{apiKey}``."""
    check_keys(settings, ("baseUrl",), what="settings")
    check_keys(credentials, ("apiKey",), what="credentials")
    return BrevoProvider(
        api_key=required_text(credentials, "apiKey"),
        base_url=sender_base_url(settings, DEFAULT_BASE_URL),
        concurrency=pool_concurrency(pool_size),
    )
