"""Helpers shared by the webhook parsers: tolerant field readers, time parsing, auth primitives."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

from emailkit.domain.ports.webhooks import (
    DELIVERY_HEADER,
    META_DELIVERY,
    MalformedPayload,
    NormalizedEvent,
    SignatureInvalid,
    SubscriptionConfirmation,
)

log = logging.getLogger("emailkit.webhooks")

_PLAIN_ADDRESS = re.compile(r"^[^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+$")
_SPACE = re.compile(r"\s")

# Unix times above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 100_000_000_000


class WebhookConfigError(ValueError):
    """A configured key or secret cannot be used; raised when a parser is built."""


class ParserBase:
    """Defaults for parsers without control messages or credentials."""

    provider: str = ""

    def __init__(self, *, verify: bool) -> None:
        self._verify_enabled = verify

    @property
    def authenticates(self) -> bool:
        return self._verify_enabled and self._has_credentials()

    def _has_credentials(self) -> bool:
        return False

    def confirmation(self, headers: Mapping[str, str], body: bytes) -> SubscriptionConfirmation | None:
        return None

    async def not_stored(self, headers: Mapping[str, str], body: bytes) -> None:
        return None


class BasicAuthJsonParser(ParserBase):
    """Providers that authenticate with HTTP basic auth and post one JSON object or an array of them."""

    #: The provider's name in "malformed payload" messages.
    label: str = ""
    #: One posted object to an event, or None for types that yield none.
    to_event: Callable[[dict[str, Any]], NormalizedEvent | None]

    def __init__(self, *, username: str | None, password: str | None, verify: bool = True) -> None:
        super().__init__(verify=verify)
        self._username = username or ""
        self._password = password or ""

    def _has_credentials(self) -> bool:
        return bool(self._username or self._password)

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        if self.authenticates:
            check_basic_auth(headers, self._username, self._password)

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        events = []
        for item in as_objects(load_json(body), what=self.label):
            event = type(self).to_event(item)
            if event is not None:
                events.append(event)
        return events


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    # RecursionError: absurdly deep nesting must be a 400, not a crash.
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedPayload("body is not JSON") from exc


def as_objects(payload: Any, *, what: str) -> list[dict[str, Any]]:
    """One object or an array of objects (providers that batch send arrays); other shapes are malformed.

    Non-object entries inside an array are skipped rather than failing the whole batch, because a 4xx makes
    the provider retry (or drop) every other event in it too.
    """
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        items = [item for item in payload if isinstance(item, dict)]
        if len(items) != len(payload):
            log.warning("%s webhook: skipped %d non-object entries", what, len(payload) - len(items))
        return items
    raise MalformedPayload(f"{what} webhook body must be a JSON object or array")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as Starlette's Headers."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = headers.get(lowered)
        if value is None:
            for key, candidate in headers.items():
                if key.lower() == lowered:
                    return candidate
    return value


def text(value: Any) -> str | None:
    """A non-empty string, or None. Numbers are accepted (ids are sometimes numeric)."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """A list as-is, a single value as a one-element list, nothing as empty."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def address(value: Any) -> str | None:
    """The bare, lower-cased address from ``user@x``, ``Name <user@x>`` or ``<user@x>``."""
    raw = text(value)
    if raw is None:
        return None
    if _PLAIN_ADDRESS.match(raw):
        # Nearly every payload carries a bare address; the full RFC 5322 parser costs 100+ µs each.
        return raw.lower()
    _, addr = parseaddr(raw)
    addr = (addr or raw).strip().strip("<>").strip().lower()
    return addr if "@" in addr and not _SPACE.search(addr) else None


def parse_time(value: Any) -> datetime | None:
    """Unix seconds or milliseconds (number or numeric string), or ISO 8601; naive values are UTC."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= _MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def first_time(*candidates: Any) -> datetime | None:
    for candidate in candidates:
        parsed = parse_time(candidate)
        if parsed is not None:
            return parsed
    return None


def received_now() -> datetime:
    """Fallback when a payload carries no usable time: when we received it."""
    return datetime.now(UTC)


def derive_event_id(provider: str, *parts: Any) -> str:
    """A stable id for providers that send none: the same payload always hashes the same."""
    material = json.dumps([provider, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return "h:" + hashlib.sha256(material.encode()).hexdigest()[:40]


def stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def string_map(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): stringify(v) for k, v in values.items() if v is not None}


def with_delivery_header(metadata: dict[str, str], headers: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Add the X-Emailkit-Delivery header value when the payload echoes the message headers and the
    explicit metadata did not already carry the delivery id."""
    if META_DELIVERY in metadata:
        return metadata
    wanted = DELIVERY_HEADER.lower()
    for name, value in headers:
        if isinstance(name, str) and name.strip().lower() == wanted:
            found = text(value)
            if found:
                return {**metadata, META_DELIVERY: found}
    return metadata


def name_value_pairs(value: Any) -> list[tuple[str, Any]]:
    """Headers given either as ``[{"name": .., "value": ..}]`` or as a mapping."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    pairs: list[tuple[str, Any]] = []
    for entry in items(value):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            pairs.append((entry["name"], entry.get("value")))
    return pairs


def check_age(timestamp: str | None, now: datetime, tolerance_seconds: int) -> int:
    """Parse a signed integer Unix timestamp and reject it outside ``now ± tolerance`` (0 = no limit)."""
    if timestamp is None:
        raise SignatureInvalid("signature timestamp missing")
    try:
        signed_at = int(timestamp.strip())
    except ValueError:
        raise SignatureInvalid("signature timestamp is not an integer") from None
    if tolerance_seconds and abs(now.timestamp() - signed_at) > tolerance_seconds:
        raise SignatureInvalid("signature timestamp outside the allowed window")
    return signed_at


def check_basic_auth(headers: Mapping[str, str], username: str, password: str) -> None:
    raw = header(headers, "authorization")
    if raw is None:
        raise SignatureInvalid("credentials missing")
    scheme, _, encoded = raw.strip().partition(" ")
    if scheme.lower() != "basic":
        raise SignatureInvalid("Basic credentials expected")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("credentials are not valid base64") from None
    user, sep, pwd = decoded.partition(b":")
    # Both comparisons always run so timing does not reveal which part was wrong.
    user_ok = hmac.compare_digest(user, username.encode())
    pwd_ok = hmac.compare_digest(pwd, password.encode())
    if not (sep and user_ok and pwd_ok):
        raise SignatureInvalid("wrong credentials")


class MemorySeenTokens:
    """Per-process replay memory with expiry; enough for one worker, swap for a shared store when scaled."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._expires: dict[str, float] = {}
        self._max_entries = max_entries

    async def remember(self, token: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        expires = self._expires.get(token)
        if expires is not None and expires > now:
            return False
        if len(self._expires) >= self._max_entries:
            self._prune(now)
        self._expires[token] = now + ttl_seconds
        return True

    async def forget(self, token: str) -> None:
        self._expires.pop(token, None)

    def _prune(self, now: float) -> None:
        self._expires = {t: e for t, e in self._expires.items() if e > now}
        if len(self._expires) >= self._max_entries:
            # Still full of live tokens: drop the oldest half (dicts keep insertion order).
            keep = list(self._expires.items())[len(self._expires) // 2 :]
            self._expires = dict(keep)
