"""Tables of outgoing webhooks: the endpoints a workspace registered, the messages owed to them (the outbox)
and every attempt to deliver one (the delivery log)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, UTCDateTime, utcnow


class WebhookEndpointStatus(enum.StrEnum):
    ENABLED = "ENABLED"
    # By its owner (`enabled: false`) or by emailkit after failing for days; `disabled_reason` says which.
    DISABLED = "DISABLED"


class WebhookMessageStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    # Retries spent, or the endpoint was disabled while the message waited.
    FAILED = "FAILED"


class WebhookEndpoint(InWorkspace, TimestampMixin, Base):
    """A URL that receives a workspace's events of the types it subscribed to, signed with its secret."""

    __tablename__ = "webhook_endpoints"
    ROOT = True

    __table_args__ = (listing_index("webhook_endpoints"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    # Event type names (emailkit.domain.webhooks_out.events.EVENT_TYPES).
    events: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    # The signing secret, sealed with a key derived from EMAILKIT_SECRET_KEY (a database dump alone cannot
    # forge our signatures); the plaintext is shown once, when the endpoint is created.
    secret_sealed: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[WebhookEndpointStatus] = mapped_column(
        _enum(WebhookEndpointStatus), nullable=False, default=WebhookEndpointStatus.ENABLED
    )
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Start of the current run of failed attempts (None after a success): three days of it disable the endpoint.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Dispatch bookkeeping: when the ticker last enqueued a delivery job (so it does not enqueue one a second),
    # and until when a running job holds the endpoint (one deliverer per endpoint keeps per-key order).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookMessage(InWorkspace, Base):
    """One event owed to one endpoint: written in the transaction that made the event happen, then delivered
    (at least once) by a job. The body is serialised once, so every attempt signs the same bytes."""

    __tablename__ = "webhook_messages"

    __table_args__ = (
        # The deliverer's window: an endpoint's PENDING messages in id (emission) order.
        Index("ix_webhook_messages_endpoint_id_status_id", "endpoint_id", "status", "id"),
        # An endpoint's delivery log, newest first.
        Index("ix_webhook_messages_endpoint_id_id", "endpoint_id", "id"),
        AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # No foreign key, like the other child rows: an emitter whose cache (a few seconds old) still names an
    # endpoint just deleted must not fail the transaction of the change it reports. Such a message is never
    # dispatched (the ticker starts from the endpoints) and the hourly prune deletes it.
    endpoint_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    # The envelope's id, sent as `webhook-id`: the same for every attempt and every endpoint of one event.
    event_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    # Messages of one endpoint with the same key are delivered one after another, in order.
    ordering_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[WebhookMessageStatus] = mapped_column(
        _enum(WebhookMessageStatus), nullable=False, default=WebhookMessageStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When a PENDING message may be tried (again); None once it is no longer pending.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The message this one sends again (redeliverWebhook).
    redelivery_of: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookAttempt(InWorkspace, Base):
    """One HTTP attempt at delivering a message: the delivery log."""

    __tablename__ = "webhook_attempts"

    __table_args__ = (Index("ix_webhook_attempts_message_id_id", "message_id", "id"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigInt, ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
