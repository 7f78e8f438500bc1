"""``sendgrid``: Twilio SendGrid v3 ``POST /v3/mail/send`` over httpx.

Batched personalised sends: messages whose content factors the same way (see
:mod:`emailkit.providers.personalised`: equal text between their per-person values, same From and Reply-To)
share one request of up to 1000 personalizations. The shared ``content`` holds a key (``%ek0%``, ``%ek1%``,
...) where each person's values go, and each personalization's ``substitutions`` maps the keys to that
person's values, which SendGrid puts back into the text and HTML it sends that person. A campaign therefore
goes out 1000 people per request instead of one; identical content (a test send to a group) is the case
without keys. Messages that do not factor like any other go one per request with bounded concurrency, as
does everything when ``batch`` is off. Per-recipient headers (List-Unsubscribe, Message-ID, ...), subject and
``custom_args`` (the delivery id and the message's metadata, echoed back in SendGrid's events) travel in each
personalization as they are.

Keys cannot be confused with content: SendGrid replaces every occurrence of a key in the content, subject and
reply-to, so a message whose fields hold ``%ek`` (which no percent-encoding can produce, ``k`` not being a
hex digit) goes out on its own; so does one whose substitutions would pass SendGrid's 10,000-byte limit per
personalization.

Classification: 202 is success (``X-Message-Id`` is the provider id, one per request); 429 is transient with
``retry_after`` from ``X-RateLimit-Reset`` (or ``Retry-After``); 5xx, timeouts and dropped connections are
transient and apply to every recipient of the request; 401/403 mean the API key is wrong or lacks the
``mail.send`` scope, which no recipient can fix, so they are transient too (the campaign's error budget
pauses it with the reason); every other 4xx is permanent. SendGrid answers a request as a whole, so when a
shared request is refused with 400, its messages are retried one per request so one bad address does not
fail the others.

Exactly once: a request's recipients are committed as handed over (``on_commit``) only once the request holds
one of the ``concurrency`` slots, right before it goes out, and its results are reported (``on_result``)
before the slot is given up. A worker killed at any moment leaves at most the recipients of the requests in
flight in doubt (up to 1000 for a shared request). Commits of requests that become ready together are
coalesced into one.
"""

from __future__ import annotations

import asyncio
import json
import time
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
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.providers.personalised import Factored, Factorer, fill, free_of, keys_for
from emailkit.providers.sender_config import http_url, refuse_unknown, required_text

MAX_PERSONALIZATIONS = 1000
# Every substitution key starts with it; see the module's docstring.
KEY_MARKER = "%ek"
KEY = KEY_MARKER + "{}%"
# "The total collective size of your substitutions may not exceed 10,000 bytes per personalization object."
MAX_SUBSTITUTION_BYTES = 10_000
# Headers SendGrid builds itself and refuses in the "headers" object.
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)


def _address(address: Address) -> dict[str, str]:
    return {"email": address.email, "name": address.name} if address.name else {"email": address.email}


def _content(text: str | None, html: str | None) -> list[dict[str, str]]:
    # SendGrid requires text/plain first, then text/html.
    content: list[dict[str, str]] = []
    if text:
        content.append({"type": "text/plain", "value": text})
    if html:
        content.append({"type": "text/html", "value": html})
    return content


def _personalization(message: OutgoingMessage) -> dict[str, Any]:
    headers = {k: v for k, v in message.headers.items() if k.lower() not in RESERVED_HEADERS}
    if message.message_id:
        headers["Message-ID"] = message.message_id
    custom_args = {str(k): str(v) for k, v in message.tags.items()}
    custom_args[DELIVERY_TAG] = message.delivery_id
    personalization: dict[str, Any] = {
        "to": [_address(message.to)],
        "subject": message.subject,
        "custom_args": custom_args,
    }
    if headers:
        personalization["headers"] = headers
    return personalization


def _exact_key(message: OutgoingMessage) -> tuple[object, ...]:
    return ("exact", message.from_, message.reply_to, message.html, message.text)


def _keyable(message: OutgoingMessage) -> bool:
    """Nothing SendGrid substitutes in (content, subject, reply-to; headers and custom_args for good measure)
    holds a key's marker, nor does any value that goes in."""
    texts = [message.html, message.text, message.subject, message.to.name, message.from_.name]
    if message.reply_to is not None:
        texts += [message.reply_to.email, message.reply_to.name]
    texts += [*message.headers.values(), *message.tags.values(), *message.personal.values()]
    return free_of(KEY_MARKER, texts)


def _substitutions(factored: Factored, keys: dict[str, str]) -> dict[str, str]:
    return {keys[name]: value for name, value in factored.values.items()}


def _retry_after(response: httpx.Response) -> float | None:
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    retry = response.headers.get("retry-after")
    if retry:
        try:
            return max(0.0, float(retry))
        except ValueError:
            return None
    return None


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors:
        parts = []
        for err in errors:
            if isinstance(err, dict):
                field = f" ({err['field']})" if err.get("field") else ""
                parts.append(f"{err.get('message', '')}{field}")
        if parts:
            return "; ".join(parts)
    return response.text[:300] or response.reason_phrase


class SendGridProvider:
    max_batch_size = MAX_PERSONALIZATIONS

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
        concurrency: int = 10,
        timeout: float = 30.0,
        categories: Sequence[str] = (),
        client: httpx.AsyncClient | None = None,
        batch: bool = True,
    ) -> None:
        """``batch=False`` sends each personalised message in a request of its own (for comparison)."""
        self.batch = batch
        self.url = base_url.rstrip("/") + "/v3/mail/send"
        self.scopes_url = base_url.rstrip("/") + "/v3/scopes"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._categories = list(categories)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = client or httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=concurrency)
        )
        self._owns_client = client is None

    def _payload(self, messages: Sequence[OutgoingMessage], factored: Sequence[Factored] | None) -> bytes:
        first = messages[0]
        personalizations = [_personalization(m) for m in messages]
        if factored is None:
            content = _content(first.text, first.html)
        else:
            text_shape, html_shape = factored[0].shapes
            keys = keys_for(factored[0].shapes, KEY)
            content = _content(
                None if text_shape is None else fill(text_shape, keys),
                None if html_shape is None else fill(html_shape, keys),
            )
            if keys:
                for personalization, own in zip(personalizations, factored, strict=True):
                    personalization["substitutions"] = _substitutions(own, keys)
        payload: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _address(first.from_),
            "subject": first.subject,
            "content": content,
        }
        if first.reply_to is not None:
            payload["reply_to"] = _address(first.reply_to)
        if self._categories:
            payload["categories"] = self._categories
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def _post(
        self,
        messages: Sequence[OutgoingMessage],
        factored: Sequence[Factored] | None,
        commits: Coalescer[str] | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        body = self._payload(messages, factored)
        async with self._semaphore:
            if commits is not None:
                await commits.submit([m.delivery_id for m in messages])
            results: list[SendResult] | None
            try:
                response = await self._client.post(self.url, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                error = f"SendGrid request failed: {type(exc).__name__}: {exc}"
                results = [SendResult.failed(m.delivery_id, error, transient=True) for m in messages]
            else:
                split = response.status_code == 400 and len(messages) > 1
                results = None if split else self._results(messages, response)
            if results is not None:
                if on_result is not None:
                    await on_result(results)
                return results
        # Find out which personalization was the problem instead of failing all of them. The request was
        # refused whole, so these recipients stay SENDING only until their single requests are recorded.
        singles = await asyncio.gather(*(self._post([m], None, commits, on_result) for m in messages))
        return [result for single in singles for result in single]

    def _results(self, messages: Sequence[OutgoingMessage], response: httpx.Response) -> list[SendResult]:
        status = response.status_code
        if 200 <= status < 300:
            message_id = response.headers.get("x-message-id")
            return [SendResult.sent(m.delivery_id, message_id) for m in messages]
        error = f"SendGrid {status}: {_error_text(response)}"
        transient = http_status_is_transient(status) or status in (401, 403)
        retry_after = _retry_after(response) if transient else None
        return [
            SendResult.failed(m.delivery_id, error, transient=transient, retry_after=retry_after)
            for m in messages
        ]

    def _requests(self, messages: Sequence[OutgoingMessage]) -> list[tuple[list[int], list[Factored] | None]]:
        """The messages (by index) of each request, with their factored content when it shares keys."""
        groups: dict[tuple[object, ...], list[int]] = {}
        factored: dict[int, Factored] = {}
        factorer = Factorer()
        for index, message in enumerate(messages):
            key = _exact_key(message)
            if self.batch and message.personal and _keyable(message):
                own = factorer.parts(message.text, message.html, message.personal)
                size = sum(len(KEY.format(len(own.values))) + len(v.encode()) for v in own.values.values())
                if own.values and size <= MAX_SUBSTITUTION_BYTES:
                    factored[index] = own
                    key = ("shape", message.from_, message.reply_to, own.shapes)
            groups.setdefault(key, []).append(index)
        requests: list[tuple[list[int], list[Factored] | None]] = []
        for indexes in groups.values():
            for start in range(0, len(indexes), MAX_PERSONALIZATIONS):
                chunk = indexes[start : start + MAX_PERSONALIZATIONS]
                shared = len(chunk) > 1 and chunk[0] in factored
                requests.append((chunk, [factored[i] for i in chunk] if shared else None))
        return requests

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        requests = self._requests(messages)
        commits = Coalescer(on_commit) if on_commit is not None else None
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._post([messages[i] for i in chunk], factored, commits, on_result))
                    for chunk, factored in requests
                ]
        except BaseExceptionGroup as group_error:
            # The hook's own error (the pipeline expects LeaseLost as raised); the other requests were
            # cancelled with it.
            raise group_error.exceptions[0] from None
        by_index: dict[int, SendResult] = {}
        for (chunk, _), task in zip(requests, tasks, strict=True):
            by_index.update(zip(chunk, task.result(), strict=True))
        return [by_index[i] for i in range(len(messages))]

    async def probe(self) -> ProbeResult:
        """GET /v3/scopes with the key: SendGrid says whether it knows the key and what it may do."""
        headers = {"Authorization": self._headers["Authorization"]}
        try:
            response = await self._client.get(self.scopes_url, headers=headers)
        except httpx.TransportError as exc:
            return ProbeResult(False, f"SendGrid request failed: {type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return ProbeResult(False, f"SendGrid {response.status_code}: {_error_text(response)}")
        try:
            scopes = response.json().get("scopes")
        except (ValueError, AttributeError):
            scopes = None
        if not isinstance(scopes, list):
            return ProbeResult(False, f"SendGrid {response.status_code}: no scopes in the answer")
        if "mail.send" not in scopes:
            return ProbeResult(False, f"SendGrid {response.status_code}: the key lacks the mail.send scope")
        return ProbeResult(True, f"SendGrid {response.status_code}: the key has the mail.send scope")

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> SendGridProvider:
    """A SendGrid sender: settings {baseUrl?}, credentials {apiKey}."""
    refuse_unknown(settings, ("baseUrl",))
    refuse_unknown(credentials, ("apiKey",))
    return SendGridProvider(
        api_key=required_text(credentials, "apiKey"),
        base_url=http_url(settings, "baseUrl", "https://api.sendgrid.com"),
        concurrency=pool_size,
    )
