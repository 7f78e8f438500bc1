"""Mailgun webhooks v3: ``{"signature": {timestamp, token, signature}, "event-data": {...}}``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import MalformedPayload, NormalizedEvent, SeenTokenStore, SignatureInvalid
from emailkit.providers.webhooks.common import (
    ParserBase,
    address,
    check_age,
    derive_event_id,
    items,
    load_json,
    obj,
    parse_time,
    received_now,
    string_map,
    text,
    with_delivery_header,
)

PROVIDER = "mailgun"

_SIMPLE = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPEN,
    "clicked": EventType.CLICK,
    "complained": EventType.COMPLAINT,
    "unsubscribed": EventType.UNSUBSCRIBE,
    # Mailgun refused the message before any delivery attempt.
    "rejected": EventType.DROPPED,
    # accepted (queued) and stored produce nothing.
}

# Without a tolerance window a token must still be remembered for some time; a day outlasts Mailgun's retries.
_TOKEN_MEMORY_SECONDS = 86_400


class MailgunWebhookParser(ParserBase):
    provider = PROVIDER

    def __init__(
        self,
        *,
        signing_key: str | None,
        tolerance_seconds: int = 300,
        seen_tokens: SeenTokenStore | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(verify=verify)
        self._key = signing_key.encode() if signing_key else None
        self._tolerance = tolerance_seconds
        self._seen = seen_tokens

    def _has_credentials(self) -> bool:
        return self._key is not None

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        if not self.authenticates or self._key is None:
            return
        payload = load_json(body)
        block = obj(payload.get("signature")) if isinstance(payload, dict) else {}
        timestamp = text(block.get("timestamp"))
        token = text(block.get("token"))
        signature = text(block.get("signature"))
        if timestamp is None or token is None or signature is None:
            raise SignatureInvalid("Mailgun signature block missing")
        check_age(timestamp, now, self._tolerance)
        expected = hmac.new(self._key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise SignatureInvalid("Mailgun signature does not match")
        # The HMAC does not cover event-data, so a captured signature must not be usable twice.
        if self._seen is not None:
            ttl = 2 * self._tolerance if self._tolerance else _TOKEN_MEMORY_SECONDS
            if not await self._seen.remember(token, ttl):
                raise SignatureInvalid("Mailgun token already used")

    async def not_stored(self, headers: Mapping[str, str], body: bytes) -> None:
        # Mailgun retries a failed delivery with the same token: refusing it as a replay would lose the events.
        if self._seen is None:
            return
        payload = load_json(body)
        block = obj(payload.get("signature")) if isinstance(payload, dict) else {}
        token = text(block.get("token"))
        if token is not None:
            await self._seen.forget(token)

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise MalformedPayload("Mailgun body must be a JSON object")
        data = payload.get("event-data")
        if not isinstance(data, dict):
            raise MalformedPayload("Mailgun body has no event-data object (only webhooks v3 are supported)")
        event = _event(data)
        return [event] if event is not None else []


def _classify(raw: str, data: dict[str, Any]) -> tuple[EventType, BounceType | None] | None:
    simple = _SIMPLE.get(raw)
    if simple is not None:
        return simple, None
    if raw != "failed":
        return None
    if text(data.get("severity")) == "temporary":
        return EventType.DEFERRED, None
    reason = text(data.get("reason")) or ""
    if reason.startswith("suppress-"):
        return EventType.DROPPED, None
    if reason == "old":
        # Mailgun gave up after its retry window of temporary failures: a soft outcome, not a bad address.
        return EventType.BOUNCE, BounceType.SOFT
    return EventType.BOUNCE, BounceType.HARD


def _event(data: dict[str, Any]) -> NormalizedEvent | None:
    raw = text(data.get("event"))
    classified = _classify(raw or "", data)
    email = address(data.get("recipient"))
    if raw is None or classified is None or email is None:
        return None
    type_, bounce_type = classified
    message = obj(data.get("message"))
    message_headers = obj(message.get("headers"))
    message_id = text(message_headers.get("message-id"))
    if message_id is not None:
        message_id = message_id.strip("<>") or None
    status = obj(data.get("delivery-status"))
    reason = text(status.get("message")) or text(status.get("description")) or text(data.get("reason"))
    url = text(data.get("url"))
    metadata = string_map(obj(data.get("user-variables")))
    metadata = with_delivery_header(metadata, message_headers.items())
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=PROVIDER,
        occurred_at=parse_time(data.get("timestamp")) or received_now(),
        raw_event=raw,
        provider_event_id=text(data.get("id"))
        or derive_event_id(PROVIDER, raw, message_id, email, data.get("timestamp"), url),
        provider_message_id=message_id,
        bounce_type=bounce_type,
        url=url,
        user_agent=text(obj(data.get("client-info")).get("user-agent")),
        ip=text(data.get("ip")),
        reason=reason,
        metadata=metadata,
        tags=tuple(t for t in (text(tag) for tag in items(data.get("tags"))) if t),
    )
