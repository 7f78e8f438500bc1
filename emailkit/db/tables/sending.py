"""Tables of sending: campaigns, their targets, batches, and the deliveries ledger."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, NullableJSONDoc, UTCDateTime, utcnow


class CampaignStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FINISHED = "FINISHED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


# A campaign in one of these has ended: nothing of it is sent and it cannot be cancelled. Only a retry of its
# failed deliveries changes its status again, reopening a FINISHED or FAILED one (lifecycle's REOPEN_ON_RETRY);
# CANCELLED is for good. The one definition; lifecycle makes every transition.
FINAL_CAMPAIGN_STATUSES: Final = frozenset(
    {CampaignStatus.FINISHED, CampaignStatus.CANCELLED, CampaignStatus.FAILED}
)


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


# The predicate of ix_deliveries_transactional_queued. A query uses the index only when its WHERE holds this
# very text with the constant inline (a bound parameter never matches a partial index's predicate under a
# generic plan), so the scheduler's read spells it with this same clause.
TRANSACTIONAL_QUEUED: Final = text("campaign_id IS NULL AND flow_run_id IS NULL AND status = 'QUEUED'")


class BatchStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"


class AbMetric(enum.StrEnum):
    """What decides an A/B test: unique opens or unique clicks per recipient of each variant."""

    OPENS = "OPENS"
    CLICKS = "CLICKS"


class AbDecision(enum.StrEnum):
    AUTOMATIC = "AUTOMATIC"
    MANUAL = "MANUAL"


class Campaign(InWorkspace, TimestampMixin, Base):
    __tablename__ = "campaigns"
    ROOT = True

    __table_args__ = (listing_index("campaigns"), AUTOINCREMENT)

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
    # Web view and public archive (migration 0011). A "View in browser" line at the top of each message:
    web_view_link: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # Listed in the workspace's public archive once sent, rendered with `archive_data` (placeholder subscriber
    # fields; None: the neutral defaults), never with a real subscriber's.
    archive: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    archive_data: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDoc, nullable=True)
    # Sent in local time (migration 0014): the wall-clock time each recipient gets it at in their own timezone
    # (naive); NULL for a campaign sent at one instant. `send_at` is then when the first timezone is due.
    local_send_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    # When the last timezone of its audience is due, worked out at start (what its statusReason says).
    local_send_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The sender it goes out through (migration 0017); NULL: its lists' default, else the instance's default.
    # No foreign key: deleteSender refuses while an unfinished campaign names it, and clears finished ones.
    sender_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)


class CampaignList(InWorkspace, Base):
    __tablename__ = "campaign_lists"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    # Deleting a list keeps the campaign (its history matters) and drops the link.
    list_id: Mapped[int] = mapped_column(
        ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class CampaignBatch(InWorkspace, Base):
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


class Delivery(InWorkspace, Base):
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
    # The A/B test variant this recipient gets, written with the row and never changed (a rerun of the batch
    # inserts nothing). No foreign key: its per-row check would cost every materialised recipient, and the
    # variants of a campaign only change before it starts, when it has no deliveries.
    variant_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    # A flow's SEND step (campaign_id NULL): the run it was sent for; its ledger row names this delivery.
    flow_run_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    # A campaign sent in local time: not handed over before this instant (the campaign's wall-clock time in
    # the recipient's timezone), written with the row. NULL: as soon as the batch runs.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The sender that handed it over (written with SENDING), or that a transactional or flow message is to go
    # through (written with the row); NULL: the instance's default sender. Retries use the same one.
    sender_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)

    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_deliveries_campaign_id_status", "campaign_id", "status", "id"),
        # The ticker's lost-transactional read: only transactional rows still QUEUED are in it, so the read
        # costs the few rows waiting rather than every flow and campaign delivery (a flow's 100k rows, NULL
        # campaign, made the ticker walk them all through the index above).
        Index(
            "ix_deliveries_transactional_queued",
            "updated_at",
            postgresql_where=TRANSACTIONAL_QUEUED,
            sqlite_where=TRANSACTIONAL_QUEUED,
        ),
        AUTOINCREMENT,
    )


class CampaignSegment(InWorkspace, Base):
    __tablename__ = "campaign_segments"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    # The segment's filter as it stood when the campaign started: the send evaluates this copy, so editing the
    # segment later never changes who a running campaign reaches. Null until the campaign starts.
    definition: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)


class CampaignVariant(InWorkspace, TimestampMixin, Base):
    """One version of an A/B-tested campaign: the subject, sender name or content it uses instead of the
    campaign's own (None: the campaign's)."""

    __tablename__ = "campaign_variants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    # 0 for variant A, 1 for B, ...: the order they were given in, which also breaks a tie.
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    subject: Mapped[str | None] = mapped_column(String(998), nullable=True)
    from_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[ContentFormat | None] = mapped_column(_enum(ContentFormat), nullable=True)
    # Recipients handed over with this variant, maintained by the ledger like the campaign's sent_count.
    sent_count: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)

    __table_args__ = (UniqueConstraint("campaign_id", "position"), AUTOINCREMENT)


class CampaignAbTest(InWorkspace, Base):
    """A campaign's A/B test: the share of the audience that tests the variants, what decides and after how
    long; and how the test went (when its share was sent, the winner, the comparison it was chosen on)."""

    __tablename__ = "campaign_ab_tests"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    test_share: Mapped[float] = mapped_column(Float, nullable=False)
    metric: Mapped[AbMetric] = mapped_column(_enum(AbMetric), nullable=False)
    wait_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    # When every batch of the test was done; the automatic choice is due at decide_at (wait_seconds later,
    # or at once when a winner was picked by hand meanwhile).
    test_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decide_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    winner_variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign_variants.id", ondelete="SET NULL"), nullable=True
    )
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decided_by: Mapped[AbDecision | None] = mapped_column(_enum(AbDecision), nullable=True)
    # The winner against the runner-up when it was chosen (later, its counters include the remainder too).
    lift: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    z_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the rest of the audience started getting the winner; until then batches materialise the test only.
    remainder_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
