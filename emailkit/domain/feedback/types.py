"""Values passed into and out of the recorder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from emailkit.domain.events import BounceType, EventType, NormalizedEvent

OUR_PROVIDER = "emailkit"
# Opens and clicks may be recorded anonymously; the other types need the recipient for their policy.
ANONYMISABLE = frozenset({EventType.OPEN, EventType.CLICK})

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_DIGITS = re.compile(r"^[0-9]{1,18}$")


def email_hash(email: str) -> str:
    """sha256 hex of the trimmed, lower-cased address (what is kept of a suppression after erasure)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def as_dedupe_key(value: str) -> str:
    """Any caller-chosen key as the 32 hex digits the key column stores."""
    lowered = value.lower()
    return lowered if _HEX32.match(lowered) else hashlib.sha256(value.encode()).hexdigest()[:32]


def as_id(value: str | None) -> int | None:
    """A database id carried as text in provider metadata, or None when it is not one."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS.match(value) and int(value) > 0 else None


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """One of our own tracking hits (open pixel, click redirect, unsubscribe, ...)."""

    type: EventType
    delivery_id: int | None = None
    occurred_at: datetime | None = None
    url: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    email: str | None = None
    subscriber_id: int | None = None
    campaign_id: int | None = None
    dedupe_key: str | None = None
    anonymous: bool = False
    bounce_type: BounceType | None = None
    reason: str | None = None
    provider: str = OUR_PROVIDER
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class FeedbackPolicy:
    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = timedelta(days=7)
    complaint_pause_rate: float = 0.003
    complaint_min_sample: int = 1000


@dataclass
class RecordSummary:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    # Stored without a delivery to tie them to (still counted for the campaign named in their metadata).
    uncorrelated: int = 0
    # Addresses newly added to the suppression list.
    suppressed: int = 0
    # Subscriptions switched to UNSUBSCRIBED.
    unsubscribed: int = 0
    # Campaigns whose counters changed, and those the complaint guard paused.
    campaigns: set[int] = field(default_factory=set)
    paused: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Pending:
    """An event on its way into storage; correlation fills in the ids."""

    type: EventType
    occurred_at: datetime
    provider: str
    email: str | None
    bounce_type: BounceType | None = None
    provider_message_id: str | None = None
    url: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    reason: str | None = None
    metadata: dict[str, str] | None = None
    dedupe_key: str | None = None
    anonymous: bool = False
    delivery_id: int | None = None
    campaign_id: int | None = None
    subscriber_id: int | None = None
    # What the payload claims, checked against the database before use.
    delivery_ref: int | None = None
    campaign_ref: int | None = None
    subscriber_ref: int | None = None

    @property
    def recipient(self) -> str | None:
        """Who, for the unique counters: the delivery, else the subscriber, else the address."""
        if self.delivery_id is not None:
            return f"d{self.delivery_id}"
        if self.subscriber_id is not None:
            return f"s{self.subscriber_id}"
        if self.email:
            return "e" + email_hash(self.email)[:32]
        return None

    def strip_identity(self) -> None:
        """Privacy mode: keep what the campaign counters need, nothing that points at a person."""
        self.delivery_id = self.subscriber_id = None
        self.email = self.ip = self.user_agent = self.provider_message_id = None
        self.metadata = None


def from_normalized(event: NormalizedEvent) -> Pending:
    return Pending(
        type=event.type,
        occurred_at=event.occurred_at,
        provider=event.provider,
        email=event.email,
        bounce_type=event.bounce_type,
        provider_message_id=event.provider_message_id,
        url=event.url,
        user_agent=event.user_agent,
        ip=event.ip,
        reason=event.reason,
        metadata=dict(event.metadata) or None,
        dedupe_key=event.dedupe_key,
        delivery_ref=as_id(event.delivery_ref),
        campaign_ref=as_id(event.campaign_ref),
        subscriber_ref=as_id(event.subscriber_ref),
    )


def from_incoming(event: IncomingEvent, now: datetime) -> Pending:
    occurred = event.occurred_at.astimezone(UTC) if event.occurred_at is not None else now
    email = event.email.strip().lower() if event.email else None
    return Pending(
        type=event.type,
        occurred_at=occurred,
        provider=event.provider,
        email=email or None,
        bounce_type=event.bounce_type,
        url=event.url,
        user_agent=event.user_agent,
        ip=event.ip,
        reason=event.reason,
        metadata=dict(event.metadata) or None,
        dedupe_key=as_dedupe_key(event.dedupe_key) if event.dedupe_key else None,
        anonymous=event.anonymous and event.type in ANONYMISABLE,
        delivery_ref=event.delivery_id,
        campaign_ref=event.campaign_id,
        subscriber_ref=event.subscriber_id,
    )
