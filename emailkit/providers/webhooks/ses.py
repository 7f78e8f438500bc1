"""Amazon SES notifications delivered by SNS: classic ``notificationType`` and event publishing."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    CertificateFetcher,
    MalformedPayload,
    NormalizedEvent,
    SignatureInvalid,
    SubscriptionConfirmation,
)
from emailkit.providers.webhooks import sns
from emailkit.providers.webhooks.common import (
    ParserBase,
    address,
    derive_event_id,
    first_time,
    items,
    load_json,
    name_value_pairs,
    obj,
    received_now,
    text,
    with_delivery_header,
)

PROVIDER = "ses"

# SES did not attempt delivery because the address is on a suppression list.
_SUPPRESSED_SUBTYPES = frozenset({"Suppressed", "OnAccountSuppressionList"})
# Outcomes decided when SES accepted the message: their time is the mail's, not the later SNS publish time.
_AT_SUBMISSION = frozenset({"Reject", "Rendering Failure"})


class SesWebhookParser(ParserBase):
    provider = PROVIDER

    def __init__(
        self,
        *,
        topic_arns: Collection[str] = (),
        cert_dir: Path | None = None,
        fetch_certificate: CertificateFetcher | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(verify=verify)
        self._topics = frozenset(a.strip() for a in topic_arns if a.strip())
        self._certificates = sns.CertificateStore(directory=cert_dir, fetch=fetch_certificate)

    def _has_credentials(self) -> bool:
        # The key comes from AWS with each message, so there is always something to check against.
        return True

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        if not self._verify_enabled:
            return
        payload = load_json(body)
        if not isinstance(payload, dict) or sns.envelope_type(payload) is None:
            raise SignatureInvalid("not a signed SNS message")
        self._check_topic(payload)
        # No age limit: SNS retries keep the original Timestamp for as long as its delivery policy runs,
        # and a replayed notification only repeats events that deduplicate.
        await sns.verify_envelope(payload, self._certificates)

    def _check_topic(self, envelope: dict[str, Any]) -> None:
        if self._topics and envelope.get("TopicArn") not in self._topics:
            raise SignatureInvalid("SNS TopicArn is not one of EMAILKIT_SNS_TOPIC_ARNS")

    def confirmation(self, headers: Mapping[str, str], body: bytes) -> SubscriptionConfirmation | None:
        envelope = sns.require_envelope(load_json(body))
        if sns.envelope_type(envelope) != sns.SUBSCRIPTION_CONFIRMATION:
            return None
        url = envelope.get("SubscribeURL")
        topic = text(envelope.get("TopicArn"))
        if not isinstance(url, str) or topic is None:
            raise MalformedPayload("SubscriptionConfirmation without SubscribeURL or TopicArn")
        # Checked even with verification off: this URL is fetched by the server.
        if not sns.is_sns_url(url):
            raise SignatureInvalid("SubscribeURL is not an https://sns.<region>.amazonaws.com/ URL")
        self._check_topic(envelope)
        return SubscriptionConfirmation(subscribe_url=url, topic_arn=topic)

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise MalformedPayload("SNS body must be a JSON object")
        kind = sns.envelope_type(payload)
        if kind is None:
            # Raw message delivery: the SES message itself is the body (only accepted unverified).
            if "notificationType" in payload or "eventType" in payload:
                return parse_ses_message(payload, sns_message_id=None, sns_timestamp=None)
            raise MalformedPayload("neither an SNS envelope nor an SES message")
        if kind != sns.NOTIFICATION:
            return []
        raw = payload.get("Message")
        if isinstance(raw, dict):
            message: Any = raw
        elif isinstance(raw, str):
            try:
                message = json.loads(raw)
            except (ValueError, RecursionError):
                return []  # a plain-text SNS notification published to the topic by something else
        else:
            raise MalformedPayload("SNS Notification without Message")
        if not isinstance(message, dict):
            return []
        return parse_ses_message(
            message,
            sns_message_id=text(payload.get("MessageId")),
            sns_timestamp=payload.get("Timestamp"),
        )


def parse_ses_message(
    message: dict[str, Any], *, sns_message_id: str | None, sns_timestamp: Any
) -> list[NormalizedEvent]:
    """The events in one SES notification (the JSON carried in the SNS ``Message``)."""
    kind = text(message.get("eventType")) or text(message.get("notificationType"))
    if kind is None:
        return []
    mail = obj(message.get("mail"))
    builder = _Builder(kind, mail, sns_message_id, sns_timestamp)
    handler = _HANDLERS.get(kind)
    return handler(builder, message) if handler else []


class _Builder:
    def __init__(
        self, kind: str, mail: dict[str, Any], sns_message_id: str | None, sns_timestamp: Any
    ) -> None:
        self.kind = kind
        self.mail = mail
        self.message_id = text(mail.get("messageId"))
        self.sns_message_id = sns_message_id
        self.sns_timestamp = sns_timestamp
        tags = obj(mail.get("tags"))
        metadata = {
            name: ",".join(str(v) for v in items(values))
            for name, values in tags.items()
            if not name.startswith("ses:") and items(values)
        }
        self.metadata = with_delivery_header(metadata, name_value_pairs(mail.get("headers")))

    def destinations(self) -> list[str]:
        return [a for a in (address(d) for d in items(self.mail.get("destination"))) if a]

    def event(
        self,
        type_: EventType,
        email: str,
        detail: dict[str, Any],
        *,
        bounce_type: BounceType | None = None,
        url: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
        reason: str | None = None,
    ) -> NormalizedEvent:
        if self.kind in _AT_SUBMISSION:
            occurred = first_time(self.mail.get("timestamp"), self.sns_timestamp)
        else:
            occurred = first_time(detail.get("timestamp"), self.sns_timestamp, self.mail.get("timestamp"))
        event_id = self.sns_message_id or derive_event_id(
            PROVIDER, self.kind, self.message_id, email, detail.get("timestamp"), url
        )
        return NormalizedEvent(
            type=type_,
            email=email,
            provider=PROVIDER,
            occurred_at=occurred or received_now(),
            raw_event=self.kind,
            provider_event_id=event_id,
            provider_message_id=self.message_id,
            bounce_type=bounce_type,
            url=url,
            user_agent=user_agent,
            ip=ip,
            reason=reason,
            metadata=self.metadata,
        )


def _recipients(entries: Any, key: str = "emailAddress") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in items(entries):
        if isinstance(entry, dict):
            addr = address(entry.get(key))
            if addr:
                found.append((addr, entry))
        else:
            addr = address(entry)
            if addr:
                found.append((addr, {}))
    return found


def _bounce(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("bounce"))
    kind = text(detail.get("bounceType"))
    subtype = text(detail.get("bounceSubType"))
    if kind == "Permanent" and subtype in _SUPPRESSED_SUBTYPES:
        type_, bounce_type = EventType.DROPPED, None
    else:
        type_ = EventType.BOUNCE
        bounce_type = BounceType.HARD if kind == "Permanent" else BounceType.SOFT
    events = []
    for email, entry in _recipients(detail.get("bouncedRecipients")):
        reason = text(entry.get("diagnosticCode")) or text(entry.get("status")) or _join(kind, subtype)
        events.append(b.event(type_, email, detail, bounce_type=bounce_type, reason=reason))
    return events


def _complaint(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("complaint"))
    feedback = text(detail.get("complaintFeedbackType"))
    if feedback == "not-spam":
        return []
    return [
        b.event(
            EventType.COMPLAINT,
            email,
            detail,
            user_agent=text(detail.get("userAgent")),
            reason=feedback or text(detail.get("complaintSubType")),
        )
        for email, _ in _recipients(detail.get("complainedRecipients"))
    ]


def _delivery(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("delivery"))
    reason = text(detail.get("smtpResponse"))
    return [
        b.event(EventType.DELIVERED, email, detail, reason=reason)
        for email, _ in _recipients(detail.get("recipients"))
    ]


def _delay(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("deliveryDelay"))
    delay_type = text(detail.get("delayType"))
    return [
        b.event(
            EventType.DEFERRED,
            email,
            detail,
            reason=text(entry.get("diagnosticCode")) or delay_type,
        )
        for email, entry in _recipients(detail.get("delayedRecipients"))
    ]


def _open(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("open"))
    return [
        b.event(
            EventType.OPEN,
            email,
            detail,
            user_agent=text(detail.get("userAgent")),
            ip=text(detail.get("ipAddress")),
        )
        for email in b.destinations()
    ]


def _click(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("click"))
    return [
        b.event(
            EventType.CLICK,
            email,
            detail,
            url=text(detail.get("link")),
            user_agent=text(detail.get("userAgent")),
            ip=text(detail.get("ipAddress")),
        )
        for email in b.destinations()
    ]


def _reject(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("reject"))
    reason = text(detail.get("reason"))
    return [b.event(EventType.DROPPED, email, detail, reason=reason) for email in b.destinations()]


def _rendering_failure(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("failure"))
    reason = text(detail.get("errorMessage"))
    return [b.event(EventType.DROPPED, email, detail, reason=reason) for email in b.destinations()]


def _subscription(b: _Builder, message: dict[str, Any]) -> list[NormalizedEvent]:
    detail = obj(message.get("subscription"))
    if not _opted_out(detail):
        return []
    reason = text(detail.get("source"))
    return [b.event(EventType.UNSUBSCRIBE, email, detail, reason=reason) for email in b.destinations()]


def _opted_out(detail: dict[str, Any]) -> bool:
    new = obj(detail.get("newTopicPreferences"))
    if new.get("unsubscribeAll") is True:
        return True
    # A topic-level opt-out that was not there before counts too (a resubscribe or no change does not).
    before = {
        text(t.get("topicName")): text(t.get("subscriptionStatus"))
        for t in items(obj(detail.get("oldTopicPreferences")).get("topicSubscriptionStatus"))
        if isinstance(t, dict)
    }
    for topic in items(new.get("topicSubscriptionStatus")):
        if isinstance(topic, dict) and text(topic.get("subscriptionStatus")) == "OptOut":
            if before.get(text(topic.get("topicName"))) != "OptOut":
                return True
    return False


def _join(*parts: str | None) -> str | None:
    joined = "/".join(p for p in parts if p)
    return joined or None


_HANDLERS = {
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Delivery": _delivery,
    "DeliveryDelay": _delay,
    "Open": _open,
    "Click": _click,
    "Reject": _reject,
    "Rendering Failure": _rendering_failure,
    "Subscription": _subscription,
    # "Send" and the "AmazonSnsSubscriptionSucceeded" test notification carry no recipient outcome.
}
