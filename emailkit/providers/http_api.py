"""What the JSON/form HTTP API providers (mailgun, postmark, resend, brevo) share.

- :func:`send_in_requests`: the exactly-once hand-over of the SES and SendGrid providers, for any API. Each
  message is prepared first (a message that cannot be expressed fails for good and is never committed); the
  prepared ones go out in requests of at most ``per_request`` messages, each of which is committed
  (``on_commit``) only once it holds one of the ``concurrency`` slots, right before it is sent, and reported
  (``on_result``) before the slot is given up. A worker killed at any moment leaves at most the messages of
  the requests in flight in doubt. Dropped connections and timeouts fail that request's messages as
  transient; nothing else about the provider's service raises.
- Field builders every API needs: a ``Name <address>`` mailbox, the headers we carry through the API's
  headers field (our List-* headers, Message-ID, ``X-Emailkit-Delivery``), the wait a 429 asks for.
- :func:`sender_base_url` and friends: the checks behind each module's ``from_sender``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import httpx

from emailkit.domain.ports.provider import (
    DELIVERY_HEADER,
    Address,
    CommitHook,
    OutgoingMessage,
    ProbeResult,
    ResultHook,
    SenderConfigError,
    SendResult,
)
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.providers.mime import ascii_email

T = TypeVar("T")

#: A prepared request item: the message and what the API takes for it.
Prepared = tuple[OutgoingMessage, T]

_HEADER_NAME = re.compile(r"[!-9;-~]+")
_PHRASE_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
# Headers every API derives from its own fields: never passed through the headers field.
_STRUCTURAL = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "message-id",
        DELIVERY_HEADER.lower(),
    }
)
# Unix times above these are absolute: 1e9 seconds is 2001, 1e11 milliseconds is 1973.
_EPOCH_SECONDS = 1_000_000_000
_EPOCH_MS = 100_000_000_000


class FieldError(ValueError):
    """One message cannot be expressed in the API's request (a bad header name, an unencodable address)."""


def clean(value: str) -> str:
    """Header values must not smuggle line breaks (header injection) or NULs."""
    if "\r" in value or "\n" in value or "\0" in value:
        value = value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").replace("\0", "")
    return value


def email_of(address: Address) -> str:
    """The address as it goes on the wire (IDNA domain); FieldError when it cannot be sent."""
    try:
        return ascii_email(address.email)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def mailbox(address: Address) -> str:
    """``Name <user@example.com>``, the display name quoted when it holds specials; just the address without
    a name. Non-ASCII names stay as they are: every one of these APIs takes UTF-8 and encodes the header."""
    email = email_of(address)
    name = clean(address.name).strip()
    if not name:
        return email
    if _PHRASE_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{email}>"


def carried_headers(message: OutgoingMessage, *, reserved: frozenset[str] = frozenset()) -> dict[str, str]:
    """The header fields to send through the API's headers field: the message's extra headers (List-
    Unsubscribe, List-Unsubscribe-Post, List-Id, ...), its Message-ID when it has one, and the delivery
    header, minus the ones the API builds itself (``reserved``, lower-case)."""
    headers: dict[str, str] = {}
    for name, value in message.headers.items():
        lowered = name.lower()
        if lowered in _STRUCTURAL or lowered in reserved:
            continue
        if not _HEADER_NAME.fullmatch(name):
            raise FieldError(f"invalid header name {name!r}")
        headers[name] = clean(value)
    if message.message_id and "message-id" not in reserved:
        headers["Message-ID"] = clean(message.message_id)
    headers[DELIVERY_HEADER] = message.delivery_id
    return headers


def retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds a rate-limited answer asks us to wait: ``Retry-After`` (seconds or an HTTP date), else the
    window's reset from the provider's rate-limit headers (seconds left, or an absolute Unix time in seconds
    or milliseconds, whichever the provider uses)."""
    current = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - current)
            except (TypeError, ValueError):
                pass
    for name in ("ratelimit-reset", "x-ratelimit-reset", "x-sib-ratelimit-reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            reset = float(value)
        except ValueError:
            continue
        if reset >= _EPOCH_MS:
            return max(0.0, reset / 1000 - current)
        if reset >= _EPOCH_SECONDS:
            return max(0.0, reset - current)
        return max(0.0, reset)
    return None


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def body_text(response: httpx.Response) -> str:
    """A short text for an error answer that is not the provider's JSON."""
    return response.text.strip()[:300] or response.reason_phrase or str(response.status_code)


def failed_all(
    chunk: Sequence[Prepared[Any]], error: str, *, transient: bool, retry_after: float | None = None
) -> list[SendResult]:
    return [
        SendResult.failed(m.delivery_id, error, transient=transient, retry_after=retry_after)
        for m, _ in chunk
    ]


async def send_in_requests(
    messages: Sequence[OutgoingMessage],
    *,
    label: str,
    prepare: Callable[[OutgoingMessage], T],
    per_request: int,
    slots: asyncio.Semaphore,
    post: Callable[[Sequence[Prepared[T]]], Awaitable[list[SendResult]]],
    on_commit: CommitHook | None,
    on_result: ResultHook | None,
    group: Callable[[Sequence[Prepared[T]]], Sequence[Sequence[int]]] | None = None,
) -> list[SendResult]:
    """Send ``messages`` in requests of at most ``per_request``; one result per message, in order.

    ``prepare`` turns a message into what the API takes for it, raising :class:`FieldError` when it cannot
    (that message then fails for good, uncommitted). ``post`` sends one request and maps its answer to one
    result per item, in order; it may let ``httpx.TransportError`` escape, which fails that request's
    messages as transient. ``group``, when given, says which of the prepared items may share a request (as
    lists of their positions); each group is then cut into requests of at most ``per_request``.
    """
    results: dict[int, SendResult] = {}
    ready: list[tuple[int, Prepared[T]]] = []
    for index, message in enumerate(messages):
        try:
            ready.append((index, (message, prepare(message))))
        except FieldError as exc:
            results[index] = SendResult.failed(message.delivery_id, f"{label}: {exc}", transient=False)
    groups = [range(len(ready))] if group is None else group([item for _, item in ready])
    chunks = [
        [ready[i] for i in positions[start : start + per_request]]
        for positions in groups
        for start in range(0, len(positions), per_request)
    ]
    commits = Coalescer(on_commit) if on_commit is not None else None

    async def one(chunk: list[tuple[int, Prepared[T]]]) -> list[SendResult]:
        items = [item for _, item in chunk]
        async with slots:
            if commits is not None:
                await commits.submit([m.delivery_id for m, _ in items])
            try:
                answered = await post(items)
            except httpx.TransportError as exc:
                error = f"{label} request failed: {type(exc).__name__}: {exc}"
                answered = failed_all(items, error, transient=True)
            if on_result is not None:
                await on_result(answered)
        return answered

    try:
        async with asyncio.TaskGroup() as tasks_of:
            tasks = [tasks_of.create_task(one(chunk)) for chunk in chunks]
    except BaseExceptionGroup as group_error:
        # The hook's own error (the pipeline expects LeaseLost as raised); the other requests were cancelled
        # with it.
        raise group_error.exceptions[0] from None
    for chunk, task in zip(chunks, tasks, strict=True):
        results.update(zip((index for index, _ in chunk), task.result(), strict=True))
    return [results[index] for index in range(len(messages))]


def http_client(concurrency: int, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))


async def probe_get(
    client: httpx.AsyncClient,
    url: str,
    *,
    label: str,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    describe: Callable[[httpx.Response], tuple[bool, str]],
) -> ProbeResult:
    """One authenticated GET; ``describe`` turns the answer into (ok, the provider's words)."""
    try:
        response = await client.get(url, headers=headers, auth=auth)
    except httpx.TransportError as exc:
        return ProbeResult(False, f"{label} unreachable: {type(exc).__name__}: {exc}")
    ok, words = describe(response)
    return ProbeResult(ok, f"{label} {response.status_code}: {words}")


class HttpApiProvider:
    """What every native send API's provider holds: its base URL, a semaphore of request slots, and an httpx
    client that it closes only when it made it (a test or a bench may lend one)."""

    label: ClassVar[str]

    def __init__(
        self, *, base_url: str, concurrency: int, timeout: float, client: httpx.AsyncClient | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._slots = asyncio.Semaphore(concurrency)
        self._client = client or http_client(concurrency, timeout)
        self._owns_client = client is None

    async def _probe(
        self,
        path: str,
        describe: Callable[[httpx.Response], tuple[bool, str]],
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> ProbeResult:
        return await probe_get(
            self._client,
            self.base_url + path,
            label=self.label,
            headers=headers,
            auth=auth,
            describe=describe,
        )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# -- from_sender checks ------------------------------------------------------------------------------------


def check_keys(given: Mapping[str, Any], allowed: Sequence[str], *, what: str) -> None:
    for key in given:
        if key not in allowed:
            raise SenderConfigError(str(key), f"unknown {what} key (expected one of: {', '.join(allowed)})")


def required_text(given: Mapping[str, Any], key: str) -> str:
    value = given.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SenderConfigError(key, "required")
    if not isinstance(value, str):
        raise SenderConfigError(key, "must be a string")
    return value.strip()


def optional_text(given: Mapping[str, Any], key: str, default: str) -> str:
    if given.get(key) is None:
        return default
    return required_text(given, key)


def sender_base_url(given: Mapping[str, Any], default: str, *, key: str = "baseUrl") -> str:
    """An absolute http(s) URL without credentials in it (they belong in the sealed credentials)."""
    url = optional_text(given, key, default)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise SenderConfigError(key, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SenderConfigError(key, "must be an absolute http(s) URL such as https://api.example.com")
    if parts.username is not None or parts.password is not None:
        raise SenderConfigError(key, "must not carry credentials; they go in the sender's credentials")
    if parts.query or parts.fragment:
        raise SenderConfigError(key, "must not have a query or fragment")
    return url.rstrip("/")


def pool_concurrency(pool_size: int) -> int:
    if pool_size < 1:
        raise SenderConfigError("poolSize", "must be at least 1")
    return pool_size
