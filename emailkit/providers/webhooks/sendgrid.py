"""SendGrid Event Webhook: batches of events, optionally signed with ECDSA P-256."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import NormalizedEvent, SignatureInvalid
from emailkit.providers.webhooks.common import (
    ParserBase,
    WebhookConfigError,
    address,
    as_objects,
    check_age,
    derive_event_id,
    header,
    items,
    load_json,
    parse_time,
    received_now,
    string_map,
    text,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_TYPES = {
    "delivered": EventType.DELIVERED,
    "bounce": EventType.BOUNCE,
    "dropped": EventType.DROPPED,
    "deferred": EventType.DEFERRED,
    "open": EventType.OPEN,
    "click": EventType.CLICK,
    "spamreport": EventType.COMPLAINT,
    "unsubscribe": EventType.UNSUBSCRIBE,
    "group_unsubscribe": EventType.UNSUBSCRIBE,
    # processed and group_resubscribe are not outcomes we record.
}

# Keys SendGrid itself puts on events; everything else at the top level is the sender's custom_args.
_RESERVED = frozenset(
    {
        "email", "timestamp", "smtp-id", "event", "category", "sg_event_id", "sg_message_id", "reason",
        "status", "response", "attempt", "useragent", "ip", "url", "url_offset", "tls", "type",
        "asm_group_id", "pool", "newsletter", "phase_id", "send_at", "sg_content_type", "sg_machine_open",
        "sg_user_id", "post_type", "bounce_classification", "cert_err", "custom_args", "unique_args",
    }
)  # fmt: skip
_RESERVED_PREFIXES = ("marketing_campaign_", "singlesend_", "sg_template_", "template_", "mc_", "sg_")

# sg_message_id is "<X-Message-Id>.<relay suffix>"; the suffix starts with "filter" or "recvd".
_MESSAGE_ID_SUFFIX = re.compile(r"\.(?:filter|recvd)")


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER SubjectPublicKeyInfo) or as PEM."""
    raw = value.strip()
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(raw.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(raw.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise WebhookConfigError(
            "EMAILKIT_SENDGRID_WEBHOOK_PUBLIC_KEY: not a base64 DER or PEM public key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WebhookConfigError("EMAILKIT_SENDGRID_WEBHOOK_PUBLIC_KEY: must be an ECDSA P-256 key")
    return key


def message_id(sg_message_id: str | None) -> str | None:
    if sg_message_id is None:
        return None
    match = _MESSAGE_ID_SUFFIX.search(sg_message_id)
    return sg_message_id[: match.start()] if match and match.start() > 0 else sg_message_id


class SendGridWebhookParser(ParserBase):
    provider = PROVIDER

    def __init__(self, *, public_key: str | None, tolerance_seconds: int = 300, verify: bool = True) -> None:
        super().__init__(verify=verify)
        self._key = load_public_key(public_key) if public_key else None
        self._tolerance = tolerance_seconds

    def _has_credentials(self) -> bool:
        return self._key is not None

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        if not self.authenticates or self._key is None:
            return
        signature_b64 = header(headers, SIGNATURE_HEADER)
        timestamp = header(headers, TIMESTAMP_HEADER)
        if signature_b64 is None or timestamp is None:
            raise SignatureInvalid("SendGrid signature headers missing")
        check_age(timestamp, now, self._tolerance)
        try:
            signature = base64.b64decode(signature_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureInvalid("SendGrid signature is not base64") from None
        try:
            # The signed bytes are the header value exactly as sent, then the raw body.
            self._key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureInvalid("SendGrid signature does not match") from None

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        events = []
        for item in as_objects(load_json(body), what="SendGrid"):
            event = _event(item)
            if event is not None:
                events.append(event)
        return events


def _event(item: dict[str, Any]) -> NormalizedEvent | None:
    raw = text(item.get("event"))
    type_ = _TYPES.get(raw or "")
    email = address(item.get("email"))
    if raw is None or type_ is None or email is None:
        return None
    bounce_type = None
    if type_ is EventType.BOUNCE:
        bounce_type = BounceType.SOFT if text(item.get("type")) == "blocked" else BounceType.HARD
    sg_message_id = text(item.get("sg_message_id"))
    url = text(item.get("url"))
    event_id = text(item.get("sg_event_id")) or derive_event_id(
        PROVIDER, raw, sg_message_id, email, item.get("timestamp"), url
    )
    return NormalizedEvent(
        type=type_,
        email=email,
        provider=PROVIDER,
        occurred_at=parse_time(item.get("timestamp")) or received_now(),
        raw_event=raw,
        provider_event_id=event_id,
        provider_message_id=message_id(sg_message_id),
        bounce_type=bounce_type,
        url=url,
        user_agent=text(item.get("useragent")),
        ip=text(item.get("ip")),
        reason=text(item.get("reason")) or text(item.get("response")),
        metadata=_custom_args(item),
        tags=tuple(t for t in (text(c) for c in items(item.get("category"))) if t),
    )


def _custom_args(item: dict[str, Any]) -> dict[str, str]:
    custom: dict[str, Any] = {}
    # Some integrations (and old API versions) nest them instead of flattening.
    for nested in ("unique_args", "custom_args"):
        value = item.get(nested)
        if isinstance(value, dict):
            custom.update(value)
    for key, value in item.items():
        if key not in _RESERVED and not key.startswith(_RESERVED_PREFIXES):
            custom[key] = value
    return string_map(custom)
