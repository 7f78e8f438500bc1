"""Values passed into and out of the recorder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.ports.webhooks import META_CAMPAIGN, META_DELIVERY, META_SUBSCRIBER, NormalizedEvent

OUR_PROVIDER = "emailkit"
# Opens and clicks may be recorded anonymously; the other types need the recipient for their policy.
ANONYMISABLE = frozenset({EventType.OPEN, EventType.CLICK})

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_DIGITS = re.compile(r"^[0-9]{1,18}$")


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


# First-seen markers (campaign_firsts.marker): one code per counter; a link's marker is a hash of its URL
# with the low three bits set, so it never equals a code.
MARKER_BOUNCED = 1
MARKER_COMPLAINED = 2
MARKER_OPEN = 3
MARKER_CLICK = 4
MARKER_UNSUBSCRIBED = 5
_ADDRESS_BASE = 2**62


def link_marker(hashed_url: str) -> int:
    return (int(hashed_url[:16], 16) >> 1) | 7


def as_dedupe_key(value: str) -> str:
    """Any caller-chosen key as the 32 hex digits the key column stores."""
    lowered = value.lower()
    return lowered if _HEX32.match(lowered) else hashlib.sha256(value.encode()).hexdigest()[:32]


def as_id(value: str | None) -> int | None:
    """A database id carried as text in provider metadata, or None when it is not one."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        value = value.strip()
        if not _DIGITS.match(value):
            return None
    if len(value) > 18:
        return None
    number = int(value)
    return number if number > 0 else None


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
    # The A/B test variant of the delivery, whose counters the row adds to too (None: no test, or no delivery).
    variant_id: int | None = None
    # The workspace the row is stored and acted upon in; 0 until correlation decides (never a workspace id).
    workspace_id: int = 0
    # What the payload claims, checked against the database before use.
    delivery_ref: int | None = None
    campaign_ref: int | None = None
    subscriber_ref: int | None = None

    @property
    def recipient(self) -> int | None:
        """Who, for the unique counters: the delivery, else the subscriber, else the address (three
        disjoint ranges of one integer; see :class:`~emailkit.db.tables.feedback.CampaignFirst`)."""
        if self.delivery_id is not None:
            return self.delivery_id
        if self.subscriber_id is not None:
            return -self.subscriber_id
        if self.email:
            return -(_ADDRESS_BASE + int(email_hash(self.email)[:15], 16))
        return None

    def strip_identity(self) -> None:
        """Privacy mode: keep what the campaign counters need (the campaign, its A/B test variant and its
        workspace), nothing that points at a person."""
        self.delivery_id = self.subscriber_id = None
        self.email = self.ip = self.user_agent = self.provider_message_id = None
        self.metadata = None


# Our correlation keys are kept as columns (delivery, campaign, subscriber), not repeated in the metadata.
_OURS = frozenset({META_DELIVERY, META_CAMPAIGN, META_SUBSCRIBER})


def _custom(metadata: Mapping[str, str]) -> dict[str, str] | None:
    if not metadata or metadata.keys() <= _OURS:
        return None
    return {k: v for k, v in metadata.items() if k not in _OURS} or None


def from_normalized(event: NormalizedEvent) -> Pending:
    metadata = event.metadata
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
        metadata=_custom(metadata),
        dedupe_key=event.dedupe_key,
        delivery_ref=as_id(metadata.get(META_DELIVERY)),
        campaign_ref=as_id(metadata.get(META_CAMPAIGN)),
        subscriber_ref=as_id(metadata.get(META_SUBSCRIBER)),
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
