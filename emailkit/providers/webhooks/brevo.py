"""Brevo (ex-Sendinblue) transactional and marketing webhooks: one object per POST, an array if batched."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import NormalizedEvent
from emailkit.providers.webhooks.common import (
    BasicAuthJsonParser,
    address,
    derive_event_id,
    items,
    parse_time,
    received_now,
    string_map,
    text,
)

PROVIDER = "brevo"
CUSTOM_HEADER = "X-Mailin-custom"

_TYPES: dict[str, tuple[EventType, BounceType | None]] = {
    "delivered": (EventType.DELIVERED, None),
    "hard_bounce": (EventType.BOUNCE, BounceType.HARD),
    "soft_bounce": (EventType.BOUNCE, BounceType.SOFT),
    # Brevo refused to send (unsubscribed/blocklisted address, invalid syntax, sending error).
    "blocked": (EventType.DROPPED, None),
    "invalid_email": (EventType.DROPPED, None),
    "error": (EventType.DROPPED, None),
    "deferred": (EventType.DEFERRED, None),
    "spam": (EventType.COMPLAINT, None),
    "complaint": (EventType.COMPLAINT, None),
    "opened": (EventType.OPEN, None),
    "unique_opened": (EventType.OPEN, None),
    "proxy_open": (EventType.OPEN, None),
    "unique_proxy_open": (EventType.OPEN, None),
    "click": (EventType.CLICK, None),
    "unsubscribed": (EventType.UNSUBSCRIBE, None),
    # The marketing (campaign) webhook spells it without the "d".
    "unsubscribe": (EventType.UNSUBSCRIBE, None),
    # request (accepted for sending) and contact/list events produce nothing.
}


class BrevoWebhookParser(BasicAuthJsonParser):
    provider = PROVIDER
    label = "Brevo"


def _occurred_at(item: dict[str, Any]) -> datetime | None:
    # ts_epoch is milliseconds in real payloads but seconds in some documented samples; only trust it when it
    # really is milliseconds. ``date`` is in the account's local time without an offset: never used.
    ts_epoch = item.get("ts_epoch")
    if isinstance(ts_epoch, int | float) and not isinstance(ts_epoch, bool) and ts_epoch >= 1e11:
        return parse_time(ts_epoch)
    for key in ("ts_event", "ts", "ts_epoch"):
        parsed = parse_time(item.get(key))
        if parsed is not None:
            return parsed
    return None


def _metadata(item: dict[str, Any]) -> dict[str, str]:
    custom = item.get(CUSTOM_HEADER)
    if isinstance(custom, dict):
        return string_map(custom)
    raw = text(custom)
    if raw is None:
        return {}
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        decoded = None
    if isinstance(decoded, dict):
        return string_map(decoded)
    return {CUSTOM_HEADER: raw}


def _tags(item: dict[str, Any]) -> tuple[str, ...]:
    values = item.get("tags")
    if values is None:
        tag = text(item.get("tag"))
        if tag is not None:
            try:
                values = json.loads(tag)
            except (ValueError, RecursionError):
                values = [tag]
    return tuple(t for t in (text(v) for v in items(values)) if t)


def _event(item: dict[str, Any]) -> NormalizedEvent | None:
    raw = text(item.get("event"))
    outcome = _TYPES.get((raw or "").lower())
    email = address(item.get("email"))
    if raw is None or outcome is None or email is None:
        return None
    type_, bounce_type = outcome
    message_id = text(item.get("message-id")) or text(item.get("message_id"))
    url = text(item.get("link")) or text(item.get("URL")) or text(item.get("url"))
    if type_ is not EventType.CLICK:
        url = None
    occurred = _occurred_at(item)
    # Brevo's "id" is the webhook's id, shared by every event it sends, so it cannot identify an event.
    event_id = derive_event_id(
        PROVIDER, raw, message_id, email, item.get("ts_epoch"), item.get("ts_event"), item.get("ts"), url
    )
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=PROVIDER,
        occurred_at=occurred or received_now(),
        raw_event=raw,
        provider_event_id=event_id,
        provider_message_id=message_id,
        bounce_type=bounce_type,
        url=url,
        user_agent=text(item.get("user_agent")) or text(item.get("useragent")),
        ip=text(item.get("ip")),
        reason=text(item.get("reason")),
        metadata=_metadata(item),
        tags=_tags(item),
    )


BrevoWebhookParser.to_event = staticmethod(_event)
