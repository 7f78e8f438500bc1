"""Provider feedback normalised into one event shape, and the port every webhook parser implements.

Parsers are pure: they verify a request and turn its body into :class:`NormalizedEvent` values. Storage,
deduplication, correlation with deliveries and suppression policy happen in the caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from emailkit.db.tables.feedback import BounceType, EventType

# Correlation written by the sending side and read back from provider payloads. Metadata keys are limited to
# characters every provider accepts in tag / custom-arg names (SES allows only [A-Za-z0-9_-]).
DELIVERY_HEADER = "X-Emailkit-Delivery"
META_DELIVERY = "emailkit_delivery"
META_CAMPAIGN = "emailkit_campaign"
META_SUBSCRIBER = "emailkit_subscriber"


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    """One thing that happened to one recipient of one message, as a provider reported it.

    ``provider_event_id`` is the provider's own id for the event when it has one (SNS MessageId,
    ``sg_event_id``, Mailgun ``event-data.id``, Postmark bounce ``ID``, ``svix-id``), otherwise a hash of the
    fields that identify the event, so a retried delivery of the same payload yields the same value. Several
    events may share it (one SNS message reports many recipients; SendGrid's documented samples reuse a
    placeholder id), so storage should deduplicate on :attr:`dedupe_key`.
    """

    type: EventType
    email: str
    provider: str
    occurred_at: datetime
    raw_event: str
    provider_event_id: str
    provider_message_id: str | None = None
    bounce_type: BounceType | None = None
    url: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    reason: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))
        object.__setattr__(self, "email", self.email.strip().lower())
        if not self.email:
            raise ValueError("email is required")
        if (self.type is EventType.BOUNCE) != (self.bounce_type is not None):
            raise ValueError("bounce_type is set for bounces and only for bounces")

    @property
    def dedupe_key(self) -> str:
        """Stable identity of this event across provider retries (32 hex characters)."""
        parts = (self.provider, self.raw_event, self.type.value, self.provider_event_id, self.email)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    @property
    def delivery_ref(self) -> str | None:
        """Our delivery id as the sending side attached it, if the payload carried it back."""
        return self.metadata.get(META_DELIVERY)

    @property
    def campaign_ref(self) -> str | None:
        return self.metadata.get(META_CAMPAIGN)

    @property
    def subscriber_ref(self) -> str | None:
        return self.metadata.get(META_SUBSCRIBER)


@dataclass(frozen=True, slots=True)
class SubscriptionConfirmation:
    """An SNS topic asks us to confirm a subscription: the caller GETs ``subscribe_url`` (already checked to
    be an ``https://sns.<region>.amazonaws.com/`` URL). Not an event."""

    subscribe_url: str
    topic_arn: str


@dataclass(frozen=True, slots=True)
class WebhookResult:
    events: list[NormalizedEvent]
    confirmation: SubscriptionConfirmation | None = None


class WebhookError(Exception):
    """A webhook request is refused; ``status_code`` is the HTTP answer and nothing may be stored."""

    status_code = 400


class SignatureInvalid(WebhookError):
    """Missing, malformed, stale or wrong signature or credentials."""

    status_code = 401


class MalformedPayload(WebhookError):
    """The body is not something this provider sends (not JSON, wrong shape)."""

    status_code = 400


class VerificationUnavailable(WebhookError):
    """The request could not be checked right now (e.g. a signing certificate could not be fetched); the
    provider should retry later."""

    status_code = 503


# Returns the PEM bytes served at an (already validated) SNS SigningCertURL; raises on failure.
CertificateFetcher = Callable[[str], Awaitable[bytes]]


class SeenTokenStore(Protocol):
    """Remembers one-time tokens for replay protection."""

    async def remember(self, token: str, ttl_seconds: int) -> bool:
        """Record ``token``; return False if it was already recorded and has not expired."""
        ...

    async def forget(self, token: str) -> None:
        """Drop ``token`` again (its request was verified but not stored, so the provider's retry must pass)."""
        ...


class WebhookParser(Protocol):
    provider: str

    @property
    def authenticates(self) -> bool:
        """Whether :meth:`verify` checks anything (a key is configured and verification is on)."""
        ...

    async def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Raise :class:`SignatureInvalid` (or :class:`MalformedPayload` when the body cannot even be read)
        unless the request provably comes from the provider."""
        ...

    def confirmation(self, headers: Mapping[str, str], body: bytes) -> SubscriptionConfirmation | None:
        """A control message the caller must act on instead of storing events (SNS only)."""
        ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> list[NormalizedEvent]:
        """The events in the body; unknown event types and control messages yield none."""
        ...

    async def not_stored(self, headers: Mapping[str, str], body: bytes) -> None:
        """A verified request could not be stored: undo what :meth:`verify` recorded (one-time tokens)."""
        ...
