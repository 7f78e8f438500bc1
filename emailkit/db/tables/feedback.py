"""Tables of the feedback loop: events and their dedupe keys, suppressions, per-campaign stats, links,
first-seen markers and the timeline; and the event vocabulary stored in them. Custom events (sent by the
user's own systems) share the events table, with the idempotency keys that make their retries harmless."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import Base, _enum
from emailkit.db.tables.tenancy import InWorkspace
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, UTCDateTime, utcnow


class EventType(enum.StrEnum):
    DELIVERED = "DELIVERED"
    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    OPEN = "OPEN"
    CLICK = "CLICK"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    DROPPED = "DROPPED"
    DEFERRED = "DEFERRED"
    # Sent by the user's own systems (trackEvent, POST /api/events), with a name and properties.
    CUSTOM = "CUSTOM"


class BounceType(enum.StrEnum):
    HARD = "HARD"
    SOFT = "SOFT"


class Event(InWorkspace, Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # Part of the key because PostgreSQL requires the partition key in every unique constraint.
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    type: Mapped[EventType] = mapped_column(_enum(EventType), nullable=False)
    bounce_type: Mapped[BounceType | None] = mapped_column(_enum(BounceType), nullable=True)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Null for anonymous tracking hits.
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    campaign_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    delivery_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    subscriber_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # `metadata` is reserved on declarative classes.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONDoc, nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(Uuid(as_uuid=False), nullable=True)
    # CUSTOM events only: what happened, in the sender's words, and what it said about it (a JSON object).
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)

    __table_args__ = (
        Index("ix_events_campaign_id_id", "campaign_id", "id"),
        Index("ix_events_subscriber_id_id", "subscriber_id", "id"),
        Index("ix_events_email_id", "email", "id"),
    )


class EventKey(Base):
    """Dedupe keys of stored events: a provider retry inserts nothing new (unique across partitions)."""

    __tablename__ = "event_keys"

    key: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    # BRIN: rows arrive in seen_at order, so pruning old keys is cheap and the index costs nearly nothing.
    __table_args__ = (Index("ix_event_keys_seen_at", "seen_at", postgresql_using="brin"),)


class CustomEventKey(InWorkspace, Base):
    """The idempotency keys of custom events, unique per workspace: the same key sent again (a retry, or two
    concurrent sends) records nothing new. Inserted before the event, so a concurrent duplicate waits on the
    key and then finds the first event's id here."""

    __tablename__ = "custom_event_keys"

    # The caller's key (up to 255 characters) as 128 bits of its SHA-256: a small fixed-size index entry.
    key: Mapped[str] = mapped_column(Uuid(as_uuid=False), nullable=False)
    # Set in the transaction that inserts the key; (event_id, occurred_at) is the event's primary key.
    event_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        PrimaryKeyConstraint("workspace_id", "key", name="pk_custom_event_keys"),
        # BRIN, as for event_keys: keys arrive in seen_at order and are pruned by it.
        Index("ix_custom_event_keys_seen_at", "seen_at", postgresql_using="brin"),
    )


# The counters a campaign (and each A/B test variant) keeps, in the order the statements list them.
COUNTERS: Final = (
    "delivered",
    "bounced",
    "complained",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "unsubscribed",
)


class StatsCounters:
    """The columns of COUNTERS, and when they last changed."""

    delivered: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    bounced: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    complained: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    opens: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    unique_opens: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    clicks: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    unique_clicks: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    unsubscribed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class CampaignStats(StatsCounters, InWorkspace, Base):
    """Counters maintained as events are recorded (never computed with COUNT(*) over events)."""

    __tablename__ = "campaign_stats"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )


class CampaignVariantStats(StatsCounters, InWorkspace, Base):
    """The counters of CampaignStats per A/B test variant, maintained in the same statements' batch."""

    __tablename__ = "campaign_variant_stats"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("campaign_variants.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )


class CampaignLink(InWorkspace, Base):
    __tablename__ = "campaign_links"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    # sha256 hex prefix of the URL: URLs can exceed what a btree key may hold.
    url_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    clicks: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    unique_clicks: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)


class CampaignFirst(InWorkspace, Base):
    """First-seen markers behind the unique counters: one row per (campaign, recipient, marker).

    Integers only, so the index stays small and cheap to search. ``recipient`` is the delivery id, else minus
    the subscriber id, else a number below -2**62 derived from the address. ``marker`` is a small code per
    counter, or for a clicked link a 63-bit hash of its URL with the low three bits set
    (see :mod:`emailkit.domain.feedback.types`). No foreign key: its per-row check doubled the database's
    cost of writing a marker; markers of deleted campaigns are pruned by the periodic maintenance.
    """

    __tablename__ = "campaign_firsts"

    campaign_id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    recipient: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    marker: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)


class CampaignTimeline(InWorkspace, Base):
    """Events per campaign, hour and type, maintained like the other counters."""

    __tablename__ = "campaign_timeline"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    type: Mapped[EventType] = mapped_column(_enum(EventType), primary_key=True)
    count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
