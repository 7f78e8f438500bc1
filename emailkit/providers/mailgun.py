"""``mailgun``: Mailgun's messages API, ``POST /v3/{domain}/messages`` as multipart form fields, over httpx.

One message per request (its content is personal), with bounded concurrency and the hand-over of
:func:`emailkit.providers.http_api.send_in_requests`. Authentication is HTTP Basic ``api:<key>``.

Correlation: the delivery id and the message's metadata travel as user variables (``v:emailkit_delivery``,
...), which Mailgun echoes in every event's ``user-variables`` (what our webhook parser reads), and as the
``X-Emailkit-Delivery`` header (``h:``), which bounces quoting the message carry. Our other headers
(List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, ...) go as ``h:`` fields too.

Classification: 200 is success (``id``, without its angle brackets as Mailgun's events report it, is the
provider id). 429, 408 and 5xx are transient, 429 with the wait from ``Retry-After`` or the rate-limit reset
header. 401/403 (a wrong or revoked key), 402 (the account may not send) and 404 (the sending domain is not on
the account) say nothing about the recipient and clear up once the account is fixed, so they are transient
too: the campaign's error budget pauses it with the reason. 400 (a refused parameter, e.g. an invalid
address) and the other 4xx are permanent.
"""

from __future__ import annotations

import asyncio
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
    SenderConfigError,
    SendResult,
    http_status_is_transient,
)
from emailkit.providers.http_api import (
    Prepared,
    body_text,
    carried_headers,
    check_keys,
    http_client,
    json_body,
    mailbox,
    pool_concurrency,
    probe_get,
    required_text,
    retry_after,
    send_in_requests,
    sender_base_url,
)

LABEL = "Mailgun"
DEFAULT_BASE_URL = "https://api.mailgun.net"
# Account-level answers: the key, the plan or the domain is wrong, not the recipient.
_ACCOUNT_STATUSES = frozenset({401, 402, 403, 404})
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)

Fields = list[tuple[str, tuple[None, str]]]


def _error_text(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return str(body["message"]).strip()
    return body_text(response)


def form_fields(message: OutgoingMessage) -> Fields:
    """The multipart fields of one message (repeatable names, so a list of pairs)."""
    fields: list[tuple[str, str]] = [
        ("from", mailbox(message.from_)),
        ("to", mailbox(message.to)),
        ("subject", message.subject),
    ]
    if message.text is not None:
        fields.append(("text", message.text))
    if message.html is not None:
        fields.append(("html", message.html))
    if message.reply_to is not None:
        fields.append(("h:Reply-To", mailbox(message.reply_to)))
    fields += [(f"h:{name}", value) for name, value in carried_headers(message).items()]
    variables = {str(k): str(v) for k, v in message.tags.items()}
    variables[DELIVERY_TAG] = message.delivery_id
    fields += [(f"v:{name}", value) for name, value in variables.items()]
    # (None, value): a form field without a file name, which makes httpx send multipart/form-data.
    return [(name, (None, value)) for name, value in fields]


class MailgunProvider:
    max_batch_size = 200

    def __init__(
        self,
        *,
        api_key: str,
        domain: str,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 10,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.domain = domain
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v3/{domain}/messages"
        self._auth = ("api", api_key)
        self._slots = asyncio.Semaphore(concurrency)
        self._client = client or http_client(concurrency, timeout)
        self._owns_client = client is None

    async def _post(self, chunk: Sequence[Prepared[Fields]]) -> list[SendResult]:
        ((message, fields),) = chunk
        response = await self._client.post(self.url, files=fields, auth=self._auth)
        return [self._result(message, response)]

    def _result(self, message: OutgoingMessage, response: httpx.Response) -> SendResult:
        status = response.status_code
        if status == 200:
            body = json_body(response)
            raw_id = body.get("id") if isinstance(body, dict) else None
            message_id = str(raw_id).strip().strip("<>") if raw_id else None
            return SendResult.sent(message.delivery_id, message_id or None)
        transient = http_status_is_transient(status) or status in _ACCOUNT_STATUSES
        return SendResult.failed(
            message.delivery_id,
            f"{LABEL} {status}: {_error_text(response)}",
            transient=transient,
            retry_after=retry_after(response.headers) if transient else None,
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
            prepare=form_fields,
            per_request=1,
            slots=self._slots,
            post=self._post,
            on_commit=on_commit,
            on_result=on_result,
        )

    async def probe(self) -> ProbeResult:
        """``GET /v3/domains/{domain}``: the key is accepted and the sending domain is on the account."""

        def describe(response: httpx.Response) -> tuple[bool, str]:
            if response.status_code != 200:
                return False, _error_text(response)
            body = json_body(response)
            domain = body.get("domain") if isinstance(body, dict) else None
            state = domain.get("state") if isinstance(domain, dict) else None
            return True, f"domain {self.domain} is {state or 'known'}"

        return await probe_get(
            self._client,
            f"{self.base_url}/v3/domains/{self.domain}",
            label=LABEL,
            auth=self._auth,
            describe=describe,
        )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> MailgunProvider:
    """Settings ``{domain, baseUrl?}`` (``https://api.eu.mailgun.net`` for the EU region), credentials
    ``{apiKey}``."""
    check_keys(settings, ("domain", "baseUrl"), what="settings")
    check_keys(credentials, ("apiKey",), what="credentials")
    domain = required_text(settings, "domain").lower().rstrip(".")
    if not _DOMAIN.fullmatch(domain):
        raise SenderConfigError("domain", "must be the sending domain's name, e.g. mg.example.com")
    return MailgunProvider(
        api_key=required_text(credentials, "apiKey"),
        domain=domain,
        base_url=sender_base_url(settings, DEFAULT_BASE_URL),
        concurrency=pool_concurrency(pool_size),
    )
