"""``mailgun``: Mailgun's messages API, ``POST /v3/{domain}/messages`` as multipart form fields, over httpx.

Batched personalised sends: messages whose content factors the same way (see
:mod:`emailkit.providers.personalised`: equal text between their per-person values, same From and Reply-To,
the same header and variable names) share one request of up to 1000 recipients, Mailgun's batch sending: one
``to`` field per recipient and ``recipient-variables``, a JSON object keyed by each recipient's address,
whose values Mailgun puts where the shared text, HTML, subject, ``h:`` headers and ``v:`` variables say
``%recipient.<name>%``. Each person's subject, headers (List-Unsubscribe, Message-ID, ``X-Emailkit-Delivery``)
and variables are whole recipient variables; the text and HTML hold one for each per-person value. Mailgun
sends each recipient a message of their own (only their address in To) once recipient variables are given.
A message holding ``%recipient`` anywhere goes out alone, since Mailgun would substitute into it, as does
one whose address is already in the request (the variables are keyed by address); with ``batch`` off every
message goes out alone. Authentication is HTTP Basic ``api:<key>``.

Correlation: the delivery id and the message's metadata travel as user variables (``v:emailkit_delivery``,
...), which Mailgun echoes in every event's ``user-variables`` (what our webhook parser reads), and as the
``X-Emailkit-Delivery`` header (``h:``), which bounces quoting the message carry. Our other headers
(List-Unsubscribe, List-Unsubscribe-Post, List-Id, Message-ID, ...) go as ``h:`` fields too.

Classification: 200 is success for every recipient of the request (``id``, without its angle brackets as
Mailgun's events report it, is the provider id, one per request). 429, 408 and 5xx are transient for every
recipient of the request, 429 with the wait from ``Retry-After`` or the rate-limit reset header. 401/403 (a
wrong or revoked key), 402 (the account may not send) and 404 (the sending domain is not on the account) say
nothing about the recipient and clear up once the account is fixed, so they are transient too: the
campaign's error budget pauses it with the reason. 400 (a refused parameter, e.g. an invalid address) and the
other 4xx are permanent; Mailgun answers a batch as a whole, so a batch refused with 400 is retried one
message per request, within the batch's slot, so that one bad address fails alone.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    HttpApiProvider,
    Prepared,
    body_text,
    carried_headers,
    check_keys,
    email_of,
    json_body,
    mailbox,
    pool_concurrency,
    required_text,
    retry_after,
    send_in_requests,
    sender_base_url,
)
from emailkit.providers.personalised import Factorer, Shape, fill, keys_for

LABEL = "Mailgun"
DEFAULT_BASE_URL = "https://api.mailgun.net"
# Account-level answers: the key, the plan or the domain is wrong, not the recipient.
_ACCOUNT_STATUSES = frozenset({401, 402, 403, 404})
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)

MAX_RECIPIENTS = 1000
# Mailgun substitutes %recipient.x%, %recipient% and the like wherever a batch's fields say so.
_RECIPIENT_MARK = re.compile("%recipient", re.IGNORECASE)
# Fields that every recipient of a batch shares as they are; the others are the recipient's own.
_SHARED_FIELDS = frozenset({"from", "h:Reply-To"})


@dataclass(frozen=True, slots=True)
class Item:
    """One message as the API takes it alone (``fields``), and what a batch needs of it."""

    fields: list[tuple[str, str]]
    address: str
    #: What must be equal for messages to share a request; None: it goes alone.
    shared: tuple[object, ...] | None = None
    shapes: tuple[Shape | None, Shape | None] = (None, None)
    #: The recipient's own values: per-person values of the text and HTML, then whole fields by name.
    values: Mapping[str, str] | None = None


def _error_text(response: httpx.Response) -> str:
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"].strip():
        return str(body["message"]).strip()
    return body_text(response)


def prepare(message: OutgoingMessage, *, factorer: Factorer | None) -> Item:
    """The message's fields, and with a ``factorer`` (batching) what a batch needs of it."""
    fields = _fields(message)
    item = Item(fields, email_of(message.to))
    if factorer is None or not message.personal:
        return item
    values = [message.to.name, *message.personal.values(), *(value for _, value in fields)]
    if any(_RECIPIENT_MARK.search(value) for value in values):
        return item
    content = dict(fields)
    factored = factorer.parts(content.get("text"), content.get("html"), message.personal)
    own = {f"slot:{name}": value for name, value in factored.values.items()}
    whole: list[str] = []
    shared: list[tuple[str, str]] = []
    for name, value in fields:
        if name in _SHARED_FIELDS:
            shared.append((name, value))
        elif name not in ("to", "text", "html"):
            whole.append(name)
            own[f"field:{name}"] = value
    text_shape, html_shape = factored.shapes
    key = (tuple(shared), factored.shapes, tuple(whole))
    return Item(fields, item.address, key, (text_shape, html_shape), own)


def _group(items: Sequence[Prepared[Item]]) -> list[list[int]]:
    groups: dict[object, list[int]] = {}
    addresses: dict[object, set[str]] = {}
    for index, (_, item) in enumerate(items):
        key: object = ("alone", index)
        if item.shared is not None:
            seen = addresses.setdefault(item.shared, set())
            address = item.address.lower()
            if address not in seen:
                seen.add(address)
                key = item.shared
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def batch_fields(chunk: Sequence[Prepared[Item]]) -> list[tuple[str, str]]:
    """One request for every message of ``chunk`` (which share a ``shared`` key): the shared fields with
    ``%recipient.<var>%`` where each recipient's values go, a ``to`` per recipient, and the variables."""
    first = chunk[0][1]
    assert first.values is not None
    slots = keys_for(first.shapes, "s{}")
    names = {f"slot:{name}": var for name, var in slots.items()}
    placeholders = {name: f"%recipient.{var}%" for name, var in slots.items()}
    fields: list[tuple[str, str]] = []
    whole = 0
    for name, value in first.fields:
        if name in _SHARED_FIELDS:
            fields.append((name, value))
        elif name == "text" and first.shapes[0] is not None:
            fields.append((name, fill(first.shapes[0], placeholders)))
        elif name == "html" and first.shapes[1] is not None:
            fields.append((name, fill(first.shapes[1], placeholders)))
        elif name != "to":
            var = f"f{whole}"
            whole += 1
            names[f"field:{name}"] = var
            fields.append((name, f"%recipient.{var}%"))
    variables: dict[str, dict[str, str]] = {}
    for message, item in chunk:
        assert item.values is not None
        fields.append(("to", mailbox(message.to)))
        variables[item.address] = {names[name]: value for name, value in item.values.items()}
    fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False, separators=(",", ":"))))
    return fields


def multipart_body(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """multipart/form-data in one buffer, and its Content-Type. httpx's own encoder writes each part to the
    socket on its own: for a batch's thousand ``to`` fields that was 8,000 send() calls per 2,000 recipients,
    a third of the hand-over's CPU, and ≈ 7.5 ms of CPU per single-message request (bench/send_http.py).
    URL-encoding is no way out: urllib quotes character by character in Python, slower still for a 20 KB HTML
    part. Names are escaped as browsers and httpx do (a quote or line break in a header name cannot end the
    parameter)."""
    boundary = secrets.token_hex(16)
    while any(boundary in value for _, value in fields):
        boundary = secrets.token_hex(16)
    head = f"--{boundary}\r\nContent-Disposition: form-data; name="
    parts = [f'{head}"{_form_name(name)}"\r\n\r\n{value}\r\n' for name, value in fields]
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


def _form_name(name: str) -> str:
    if '"' in name or "\r" in name or "\n" in name:
        return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return name


def _fields(message: OutgoingMessage) -> list[tuple[str, str]]:
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
    return fields


class MailgunProvider(HttpApiProvider):
    max_batch_size = MAX_RECIPIENTS
    label = LABEL

    def __init__(
        self,
        *,
        api_key: str,
        domain: str,
        base_url: str = DEFAULT_BASE_URL,
        concurrency: int = 10,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        batch: bool = True,
    ) -> None:
        """``batch=False`` sends each message in a request of its own (for comparison)."""
        self.batch = batch
        self.domain = domain
        super().__init__(base_url=base_url, concurrency=concurrency, timeout=timeout, client=client)
        self.url = f"{self.base_url}/v3/{domain}/messages"
        self._auth = ("api", api_key)

    async def _post(self, chunk: Sequence[Prepared[Item]]) -> list[SendResult]:
        if len(chunk) == 1:
            body, content_type = multipart_body(chunk[0][1].fields)
        else:
            body, content_type = multipart_body(batch_fields(chunk))
        response = await self._client.post(
            self.url, content=body, headers={"Content-Type": content_type}, auth=self._auth
        )
        if response.status_code == 400 and len(chunk) > 1:
            # Refused whole: find out which recipient was the problem instead of failing all of them.
            # Already committed and within this request's slot, so they add nothing to what is in doubt.
            return await self._singly(chunk)
        return [self._result(message, response) for message, _ in chunk]

    async def _singly(self, chunk: Sequence[Prepared[Item]]) -> list[SendResult]:
        results: list[SendResult] = []
        for message, item in chunk:
            try:
                results += await self._post([(message, item)])
            except httpx.TransportError as exc:
                error = f"{LABEL} request failed: {type(exc).__name__}: {exc}"
                results.append(SendResult.failed(message.delivery_id, error, transient=True))
        return results

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
        factorer = Factorer() if self.batch else None
        return await send_in_requests(
            messages,
            label=LABEL,
            prepare=lambda message: prepare(message, factorer=factorer),
            per_request=MAX_RECIPIENTS,
            slots=self._slots,
            post=self._post,
            on_commit=on_commit,
            on_result=on_result,
            group=_group,
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

        return await self._probe(f"/v3/domains/{self.domain}", describe, auth=self._auth)


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
