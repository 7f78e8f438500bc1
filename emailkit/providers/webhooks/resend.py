"""Resend webhooks, signed the Svix way (``svix-id``/``svix-timestamp``/``svix-signature``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import NormalizedEvent, SignatureInvalid
from emailkit.providers.webhooks.common import (
    ParserBase,
    WebhookConfigError,
    address,
    as_objects,
    check_age,
    derive_event_id,
    first_time,
    header,
    items,
    load_json,
    name_value_pairs,
    obj,
    received_now,
    string_map,
    text,
    with_delivery_header,
)

PROVIDER = "resend"

_TYPES = {
    "email.delivered": EventType.DELIVERED,
    "email.delivery_delayed": EventType.DEFERRED,
    # Resend's own event list once spelled it this way.
    "email.delivered_delayed": EventType.DEFERRED,
    "email.bounced": EventType.BOUNCE,
    "email.complained": EventType.COMPLAINT,
    "email.opened": EventType.OPEN,
    "email.clicked": EventType.CLICK,
    # Resend did not send: a sending error, or the address is on its suppression list.
    "email.failed": EventType.DROPPED,
    "email.suppressed": EventType.DROPPED,
    # email.sent, email.scheduled, contact.* and domain.* produce nothing.
}


def decode_secret(secret: str) -> bytes:
    raw = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookConfigError("EMAILKIT_RESEND_WEBHOOK_SECRET: expected whsec_<base64>") from exc
    if not key:
        raise WebhookConfigError("EMAILKIT_RESEND_WEBHOOK_SECRET is empty")
    return key


class ResendWebhookParser(ParserBase):
    provider = PROVIDER

    def __init__(self, *, secret: str | None, tolerance_seconds: int = 300, verify: bool = True) -> None:
        super().__init__(verify=verify)
        self._key = decode_secret(secret) if secret else None
        self._tolerance = tolerance_seconds

    def _has_credentials(self) -> bool:
        return self._key is not None

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        if not self.authenticates or self._key is None:
            return
        # Svix also sends the unbranded Standard Webhooks names.
        msg_id = header(headers, "svix-id") or header(headers, "webhook-id")
        timestamp = header(headers, "svix-timestamp") or header(headers, "webhook-timestamp")
        signatures = header(headers, "svix-signature") or header(headers, "webhook-signature")
        if msg_id is None or timestamp is None or signatures is None:
            raise SignatureInvalid("Svix signature headers missing")
        check_age(timestamp, now, self._tolerance)
        signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())
        # Several signatures are sent while a secret is being rotated; any v1 match is enough.
        for entry in signatures.split():
            version, _, candidate = entry.partition(",")
            if version == "v1" and hmac.compare_digest(expected, candidate.encode()):
                return
        raise SignatureInvalid("Svix signature does not match")

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        entries = as_objects(load_json(body), what="Resend")
        # The Svix message id identifies the one event a Svix delivery carries.
        delivery_id = (
            (header(headers, "svix-id") or header(headers, "webhook-id")) if len(entries) == 1 else None
        )
        events = []
        for item in entries:
            event = _event(item, delivery_id)
            if event is not None:
                events.append(event)
        return events


def _classify(raw: str, data: dict[str, Any]) -> tuple[EventType, BounceType | None] | None:
    type_ = _TYPES.get(raw)
    if type_ is not EventType.BOUNCE:
        return (type_, None) if type_ is not None else None
    bounce = obj(data.get("bounce"))
    subtype = (text(bounce.get("subType")) or "").lower()
    message = (text(bounce.get("message")) or "").lower()
    if subtype == "suppressed" or "suppression list" in message:
        return EventType.DROPPED, None
    kind = text(bounce.get("type"))
    if kind in ("Transient", "Undetermined"):
        return EventType.BOUNCE, BounceType.SOFT
    return EventType.BOUNCE, BounceType.HARD


def _metadata(data: dict[str, Any]) -> dict[str, str]:
    tags = data.get("tags")
    if isinstance(tags, dict):
        metadata = string_map(tags)
    else:
        # The send API takes tags as [{"name": .., "value": ..}]; accept that shape too.
        metadata = string_map(dict(name_value_pairs(tags)))
    return with_delivery_header(metadata, name_value_pairs(data.get("headers")))


def _event(item: dict[str, Any], delivery_id: str | None) -> NormalizedEvent | None:
    raw = text(item.get("type"))
    data = obj(item.get("data"))
    classified = _classify(raw or "", data)
    recipients = [a for a in (address(t) for t in items(data.get("to"))) if a]
    if raw is None or classified is None or not recipients:
        return None
    type_, bounce_type = classified
    # Resend reports per email, not per recipient; our sends have a single recipient.
    email = recipients[0]
    email_id = text(data.get("email_id"))
    click = obj(data.get("click"))
    detail = click or obj(data.get("open"))
    url = text(click.get("link"))
    bounce = obj(data.get("bounce"))
    reason = text(bounce.get("message")) or text(obj(data.get("failed")).get("reason"))
    occurred = first_time(item.get("created_at"), detail.get("timestamp"), data.get("created_at"))
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=PROVIDER,
        occurred_at=occurred or received_now(),
        raw_event=raw,
        provider_event_id=delivery_id
        or derive_event_id(PROVIDER, raw, email_id, email, item.get("created_at"), url),
        provider_message_id=email_id,
        bounce_type=bounce_type,
        url=url,
        user_agent=text(detail.get("userAgent")),
        ip=text(detail.get("ipAddress")),
        reason=reason,
        metadata=_metadata(data),
    )
