"""Tables of the audience: subscribers, lists and subscriptions, saved segments, imports; and the indexes the
segment compiler relies on."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, UTCDateTime, utcnow


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


class Subscriber(InWorkspace, TimestampMixin, Base):
    __tablename__ = "subscribers"
    ROOT = True

    # The address is unique per workspace: two brands may both have the same person.
    __table_args__ = (
        UniqueConstraint("workspace_id", "email", name="uq_subscribers_workspace_id_email"),
        listing_index("subscribers"),
        # Who changed lately: the incremental evaluation of SEGMENT_ENTERED flows (migration 0016).
        Index("ix_subscribers_workspace_id_updated_at", "workspace_id", "updated_at"),
        AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # Stored lower-cased so uniqueness is case-insensitive on every backend with a plain index.
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus), nullable=False, default=SubscriberStatus.ENABLED
    )

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )


class MailingList(InWorkspace, TimestampMixin, Base):
    __tablename__ = "lists"
    ROOT = True

    __table_args__ = (listing_index("lists"), AUTOINCREMENT)

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
    # The IANA timezone of subscribers reached through this list who have no valid `timezone` attribute
    # (migration 0014); NULL: the instance's default.
    default_timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The sender of campaigns to this list that name none (migration 0017); NULL: the instance's default.
    sender_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)


class Subscription(InWorkspace, TimestampMixin, Base):
    __tablename__ = "subscriptions"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum(SubscriptionStatus), nullable=False, default=SubscriptionStatus.CONFIRMED
    )

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")

    __table_args__ = (
        Index("ix_subscriptions_list_id_status", "list_id", "status", "subscriber_id"),
        Index("ix_subscriptions_workspace_id_updated_at", "workspace_id", "updated_at"),
    )


# --- segments ---------------------------------------------------------------------------------------------


class Segment(InWorkspace, TimestampMixin, Base):
    """A saved subscriber filter, evaluated whenever it is used (never a stored member list)."""

    __tablename__ = "segments"
    ROOT = True

    __table_args__ = (listing_index("segments"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # The canonical filter tree of emailkit.domain.audience.targeting.targeting.segments (camelCase keys, internal ids).
    filter: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)


# Indexes the segment compiler relies on, declared together so that what segments need from the schema is in
# one place (one of them is on the deliveries ledger). SQLite cannot use them: an always-false partial index keeps
# models and migrations identical on both backends while costing SQLite nothing.
SQLITE_NEVER = text("0")

# Serves attribute EQ / IN / CONTAINS (array element) conditions, which compile to `attributes @> ...`.
Index(
    "ix_subscribers_attributes_path_ops",
    Subscriber.__table__.c.attributes,
    postgresql_using="gin",
    postgresql_ops={"attributes": "jsonb_path_ops"},
    sqlite_where=SQLITE_NEVER,
)

# Serve substring matches on email and name (subscribers(search:), the filter's contains / startsWith /
# endsWith), which compile to LIKE / ILIKE '%...%'. pg_trgm's operator class; migration 0009 installs it.
Index(
    "ix_subscribers_email_trgm",
    Subscriber.__table__.c.email,
    postgresql_using="gin",
    postgresql_ops={"email": "gin_trgm_ops"},
    sqlite_where=SQLITE_NEVER,
)
Index(
    "ix_subscribers_name_trgm",
    Subscriber.__table__.c.name,
    postgresql_using="gin",
    postgresql_ops={"name": "gin_trgm_ops"},
    sqlite_where=SQLITE_NEVER,
)

# Serves "received any campaign within N days": SENT ledger rows by time, without touching the heap.
Index(
    "ix_deliveries_sent_at_subscriber_id",
    Delivery.__table__.c.sent_at,
    Delivery.__table__.c.subscriber_id,
    postgresql_where=Delivery.__table__.c.status == DeliveryStatus.SENT.value,
    sqlite_where=SQLITE_NEVER,
)


# --- imports ----------------------------------------------------------------------------------------------


class ImportStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class ImportMode(enum.StrEnum):
    # New addresses are added; existing subscribers get the file's name and attributes merged in.
    UPSERT = "UPSERT"
    # Existing subscribers are left entirely alone (profile and subscriptions); only new ones are added.
    SKIP_EXISTING = "SKIP_EXISTING"


class Import(InWorkspace, TimestampMixin, Base):
    """A CSV import: its settings, where it stands, and the counters of its outcome."""

    __tablename__ = "imports"
    ROOT = True

    __table_args__ = (listing_index("imports"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    status: Mapped[ImportStatus] = mapped_column(
        _enum(ImportStatus), nullable=False, default=ImportStatus.QUEUED, index=True
    )
    source_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    source_bytes: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    # columnMap, subscriptionStatus, and once parsed the sniffed encoding and delimiter.
    options: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    list_ids: Mapped[list[int]] = mapped_column(JSONDoc, nullable=False, default=list)
    mode: Mapped[ImportMode] = mapped_column(_enum(ImportMode), nullable=False, default=ImportMode.UPSERT)
    total: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    processed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    inserted: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    updated: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Bumped by every run; a run whose number is no longer current must not commit (a redelivered job won).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ImportChunk(InWorkspace, Base):
    """The uploaded file, in order, until its import ends: any worker on any machine can read it."""

    __tablename__ = "import_chunks"

    import_id: Mapped[int] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class ImportRowError(InWorkspace, Base):
    """A row of the file that was not imported, and why (bounded per import; the counters stay exact)."""

    __tablename__ = "import_errors"

    __table_args__ = (Index("ix_import_errors_import_id_row", "import_id", "row"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"), nullable=False)
    row: Mapped[int] = mapped_column(BigInt, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "HARD_BOUNCE"
    SOFT_BOUNCE = "SOFT_BOUNCE"
    COMPLAINT = "COMPLAINT"
    MANUAL = "MANUAL"


class Suppression(InWorkspace, Base):
    """An address no message may be sent to. ``email`` is cleared on erasure; the hash stays."""

    __tablename__ = "suppressions"
    ROOT = True

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # sha256 hex of the lower-cased address.
    email_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[SuppressionReason] = mapped_column(_enum(SuppressionReason), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The provider that reported it, or "api" for manual entries.
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    # Per workspace: one brand's complaint says nothing about another's mail.
    __table_args__ = (
        UniqueConstraint("workspace_id", "email_hash", name="uq_suppressions_workspace_id_email_hash"),
        UniqueConstraint("workspace_id", "email", name="uq_suppressions_workspace_id_email"),
        listing_index("suppressions"),
        AUTOINCREMENT,
    )
