"""ORM tables. One metadata for the whole application; Alembic autogenerates against it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from emailkit.domain.types import BigInt, BigIntPK, JSONDoc, NullableJSONDoc, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# SQLite otherwise reuses the id of a deleted last row; global IDs and keyset cursors must never repeat.
AUTOINCREMENT = {"sqlite_autoincrement": True}
AUTOINCREMENT_ONLY = (AUTOINCREMENT,)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR (no native PG enum) so adding a value never needs an ALTER TYPE migration.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda members: [m.value for m in members],
    )


class SubscriberStatus(enum.StrEnum):
    ENABLED = "ENABLED"
    BLOCKLISTED = "BLOCKLISTED"


class OptIn(enum.StrEnum):
    SINGLE = "SINGLE"
    DOUBLE = "DOUBLE"


class Visibility(enum.StrEnum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


class SubscriptionStatus(enum.StrEnum):
    UNCONFIRMED = "UNCONFIRMED"
    CONFIRMED = "CONFIRMED"
    UNSUBSCRIBED = "UNSUBSCRIBED"


class TemplateKind(enum.StrEnum):
    CAMPAIGN = "CAMPAIGN"
    TRANSACTIONAL = "TRANSACTIONAL"


class ContentFormat(enum.StrEnum):
    MJML = "MJML"
    HTML = "HTML"


class CampaignStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    # Being handed over by a live worker: its own request (or SMTP hand-over) is in flight.
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    # The worker stopped while this was SENDING: it may or may not have gone out. Never counted as sent and
    # never sent again unless an operator retries it.
    IN_DOUBT = "IN_DOUBT"


class BatchStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class Subscriber(TimestampMixin, Base):
    __tablename__ = "subscribers"

    __table_args__ = AUTOINCREMENT_ONLY

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # Stored lower-cased so uniqueness is case-insensitive on every backend with a plain index.
    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus), nullable=False, default=SubscriberStatus.ENABLED
    )

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )


class MailingList(TimestampMixin, Base):
    __tablename__ = "lists"

    __table_args__ = AUTOINCREMENT_ONLY

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    optin: Mapped[OptIn] = mapped_column(_enum(OptIn), nullable=False, default=OptIn.SINGLE)
    visibility: Mapped[Visibility] = mapped_column(
        _enum(Visibility), nullable=False, default=Visibility.PRIVATE
    )
    tags: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    # The TRANSACTIONAL template of this list's double opt-in mail; NULL uses the built-in one.
    optin_template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="SET NULL"), nullable=True
    )


class Subscription(TimestampMixin, Base):
    __tablename__ = "subscriptions"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus), nullable=False, default=SubscriptionStatus.CONFIRMED
    )

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")

    __table_args__ = (Index("ix_subscriptions_list_id_status", "list_id", "status", "subscriber_id"),)


class Template(TimestampMixin, Base):
    __tablename__ = "templates"

    __table_args__ = AUTOINCREMENT_ONLY

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[TemplateKind] = mapped_column(_enum(TemplateKind), nullable=False)
    format: Mapped[ContentFormat] = mapped_column(_enum(ContentFormat), nullable=False)
    subject: Mapped[str] = mapped_column(String(998), nullable=False, default="")
    body: Mapped[str] = mapped_column(Text, nullable=False)


class Campaign(TimestampMixin, Base):
    __tablename__ = "campaigns"

    __table_args__ = AUTOINCREMENT_ONLY

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    subject: Mapped[str] = mapped_column(String(998), nullable=False)
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus), nullable=False, default=CampaignStatus.DRAFT, index=True
    )
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    from_email: Mapped[str] = mapped_column(String(320), nullable=False)
    from_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    reply_to: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # Either a template reference or an inline body; the template wins when both are present.
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[ContentFormat | None] = mapped_column(_enum(ContentFormat), nullable=True)
    plain_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    track_opens: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    track_clicks: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Snapshot taken at start: subscribers with a higher id joined later and are not part of this send.
    audience_max_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    # Counters maintained by the send pipeline (never COUNT(*) over deliveries on a hot path).
    recipients_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    sent_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    failed_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    skipped_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    in_doubt_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CampaignList(Base):
    __tablename__ = "campaign_lists"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    # Deleting a list keeps the campaign (its history matters) and drops the link.
    list_id: Mapped[int] = mapped_column(
        ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[Role] = mapped_column(_enum(Role), nullable=False)
    # First characters of the key, shown in listings so people can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (UniqueConstraint("key_hash"), AUTOINCREMENT)


class CampaignBatch(Base):
    """A keyset range of subscriber ids of one campaign: the unit of work a worker claims."""

    __tablename__ = "campaign_batches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    lo_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    hi_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    status: Mapped[BatchStatus] = mapped_column(
        _enum(BatchStatus), nullable=False, default=BatchStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # A worker holds a batch until lease_until; an expired lease means the worker died and the batch is free.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )

    __table_args__ = (
        UniqueConstraint("campaign_id", "lo_id"),
        Index("ix_campaign_batches_campaign_id_status", "campaign_id", "status"),
        AUTOINCREMENT,
    )


class Delivery(Base):
    """The ledger: one row per (campaign, subscriber); its uniqueness is what makes sending exactly-once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True
    )
    # Kept when the subscriber is erased (SET NULL) so campaign totals stay intact.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    # Transactional sends (campaign_id NULL): the template and the data it is rendered with.
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="SET NULL"), nullable=True
    )
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), nullable=False, default=DeliveryStatus.QUEUED
    )
    skip_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The lists through which the recipient was sendable when this row was materialised (a JSON array of
    # ids): an unsubscribe from this delivery leaves all of them, whatever the lists or segments look like by
    # then. NULL on transactional rows and on rows written before it was recorded.
    via_list_ids: Mapped[list[int] | None] = mapped_column(NullableJSONDoc, nullable=True)
    provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_deliveries_campaign_id_status", "campaign_id", "status", "id"),
        AUTOINCREMENT,
    )


# Tables of other areas live in their own modules; importing them here puts them on the one metadata.
from emailkit.domain import models_audience, models_feedback  # noqa: E402, F401
