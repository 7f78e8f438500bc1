"""Postmark webhooks: one record per POST, authenticated with HTTP Basic credentials in the webhook URL."""

from __future__ import annotations

from typing import Any

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import NormalizedEvent
from emailkit.providers.webhooks.common import (
    BasicAuthJsonParser,
    address,
    derive_event_id,
    first_time,
    obj,
    received_now,
    string_map,
    text,
)

PROVIDER = "postmark"

_Outcome = tuple[EventType, BounceType | None]

# Bounce ``Type`` values (https://postmarkapp.com/developer/api/bounce-api#bounce-types). TypeCode is not
# used: samples in the wild carry a TypeCode that contradicts Type.
_BOUNCES: dict[str, _Outcome] = {
    "HardBounce": (EventType.BOUNCE, BounceType.HARD),
    "BadEmailAddress": (EventType.BOUNCE, BounceType.HARD),
    "SoftBounce": (EventType.BOUNCE, BounceType.SOFT),
    "DnsError": (EventType.BOUNCE, BounceType.SOFT),
    "Blocked": (EventType.BOUNCE, BounceType.SOFT),
    "SpamNotification": (EventType.BOUNCE, BounceType.SOFT),
    "VirusNotification": (EventType.BOUNCE, BounceType.SOFT),
    "DMARCPolicy": (EventType.BOUNCE, BounceType.SOFT),
    "Unknown": (EventType.BOUNCE, BounceType.SOFT),
    # Postmark keeps retrying these.
    "Transient": (EventType.DEFERRED, None),
    "Unsubscribe": (EventType.UNSUBSCRIBE, None),
    "SpamComplaint": (EventType.COMPLAINT, None),
    # Postmark did not send at all.
    "ManuallyDeactivated": (EventType.DROPPED, None),
    "TemplateRenderingFailed": (EventType.DROPPED, None),
    "SMTPApiError": (EventType.DROPPED, None),
    # AutoResponder, AddressChange, Subscribe, ChallengeVerification, OpenRelayTest, Unconfirmed,
    # InboundError: not about deliverability of our message.
}

_SUPPRESSIONS: dict[str, _Outcome] = {
    "HardBounce": (EventType.BOUNCE, BounceType.HARD),
    "SpamComplaint": (EventType.COMPLAINT, None),
    "ManualSuppression": (EventType.UNSUBSCRIBE, None),
}


class PostmarkWebhookParser(BasicAuthJsonParser):
    provider = PROVIDER
    label = "Postmark"


def _classify(raw: str, record: dict[str, Any]) -> _Outcome | None:
    if raw == "Bounce":
        return _BOUNCES.get(text(record.get("Type")) or "")
    if raw == "SpamComplaint":
        return EventType.COMPLAINT, None
    if raw == "Delivery":
        return EventType.DELIVERED, None
    if raw == "Open":
        return EventType.OPEN, None
    if raw == "Click":
        return EventType.CLICK, None
    if raw == "SubscriptionChange" and record.get("SuppressSending") is True:
        return _SUPPRESSIONS.get(text(record.get("SuppressionReason")) or "")
    return None


def _event(record: dict[str, Any]) -> NormalizedEvent | None:
    raw = text(record.get("RecordType"))
    outcome = _classify(raw or "", record)
    email = address(record.get("Email")) or address(record.get("Recipient"))
    if raw is None or outcome is None or email is None:
        return None
    type_, bounce_type = outcome
    message_id = text(record.get("MessageID"))
    raw_time = (
        record.get("BouncedAt")
        or record.get("DeliveredAt")
        or record.get("ReceivedAt")
        or record.get("ChangedAt")
    )
    url = text(record.get("OriginalLink"))
    # Bounce and SpamComplaint records carry the bounce ID; the other record types have no id of their own.
    event_id = text(record.get("ID")) if raw in ("Bounce", "SpamComplaint") else None
    tag = text(record.get("Tag"))
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=PROVIDER,
        occurred_at=first_time(raw_time) or received_now(),
        raw_event=raw,
        provider_event_id=event_id or derive_event_id(PROVIDER, raw, message_id, email, raw_time, url),
        provider_message_id=message_id,
        bounce_type=bounce_type,
        url=url,
        user_agent=text(record.get("UserAgent")),
        ip=text(obj(record.get("Geo")).get("IP")),
        reason=_reason(record),
        metadata=string_map(obj(record.get("Metadata"))),
        tags=(tag,) if tag else (),
    )


def _reason(record: dict[str, Any]) -> str | None:
    if record.get("RecordType") == "SubscriptionChange":
        return text(record.get("SuppressionReason"))
    return text(record.get("Details")) or text(record.get("Description"))


PostmarkWebhookParser.to_event = staticmethod(_event)
