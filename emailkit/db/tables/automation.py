"""Tables of automation: flows, their published versions, each person's run through one, and the step ledger.

A run is a row that says where a person is (``step_key``) and when they are due there (``due_at``): nothing of a
waiting person lives in memory or in the queue. The ledger (``flow_step_runs``) has one row per executed step,
unique on (run, step, visit), which is what makes a step happen at most once however often a run is retried.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, NullableJSONDoc, UTCDateTime, utcnow


class FlowStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ARCHIVED = "ARCHIVED"


class FlowTriggerType(enum.StrEnum):
    SUBSCRIBED = "SUBSCRIBED"
    EVENT = "EVENT"
    DATE_ATTRIBUTE = "DATE_ATTRIBUTE"
    SEGMENT_ENTERED = "SEGMENT_ENTERED"
    ENGAGED = "ENGAGED"


class FlowReentry(enum.StrEnum):
    ONCE = "ONCE"
    ALWAYS = "ALWAYS"
    AFTER_SECONDS = "AFTER_SECONDS"


class FlowRunStatus(enum.StrEnum):
    # Inside the flow: due now, or waiting until due_at.
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    # Left early: the exit condition matched, an EXIT step, unsubscribed, erased, or the flow was archived.
    EXITED = "EXITED"


class FlowStepRunStatus(enum.StrEnum):
    # Started and not done: a WAIT waiting, a SEND whose delivery is queued (its delivery says whether it is
    # being handed over) or held by the frequency cap, a WEBHOOK being retried.
    PENDING = "PENDING"
    DONE = "DONE"
    SENT = "SENT"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    # The worker stopped while handing the message over: never sent again, never counted as sent.
    IN_DOUBT = "IN_DOUBT"


# The predicate of ix_flow_runs_due. The ticker's read spells it with this same clause: only a constant inline
# matches a partial index's predicate under a generic plan (with a bound status, the plan asyncpg's prepared
# statement settled on read every run of the table at every tick).
RUN_ACTIVE: Final = text("status = 'ACTIVE'")


class Flow(InWorkspace, TimestampMixin, Base):
    __tablename__ = "flows"
    ROOT = True

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[FlowStatus] = mapped_column(_enum(FlowStatus), nullable=False, default=FlowStatus.DRAFT)
    # The definition being edited (trigger, steps, reentry, exit condition), as the API's input gave it.
    draft: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    # The published version people enter; None until the first publish.
    version_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The published trigger, in columns, so that an event finds the flows it starts with an indexed read.
    trigger_type: Mapped[FlowTriggerType | None] = mapped_column(_enum(FlowTriggerType), nullable=True)
    trigger_list_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    trigger_event: Mapped[str | None] = mapped_column(String(100), nullable=True)
    trigger_segment_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    trigger_campaign_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    # Live counters (never COUNT(*) over runs on a hot path).
    entered: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    active: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    completed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    exited: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    # Where an incremental trigger (segment entered, date attribute) has got to.
    trigger_state: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDoc, nullable=True)

    __table_args__ = (
        listing_index("flows"),
        Index("ix_flows_trigger", "workspace_id", "status", "trigger_type"),
        AUTOINCREMENT,
    )


class FlowVersion(InWorkspace, Base):
    """A published definition; runs keep the version they entered on."""

    __tablename__ = "flow_versions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (UniqueConstraint("flow_id", "version"), AUTOINCREMENT)


class FlowRun(InWorkspace, Base):
    """One person's journey through one flow."""

    __tablename__ = "flow_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # No foreign keys on the flow or the person: their per-row checks cost every person an import enters (a
    # million in one statement; measured, about half the time of entering them). Flows are archived, never
    # deleted; erasing or deleting the person ends the run and clears `subscriber_id` (automation.erasure).
    flow_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    version_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    subscriber_id: Mapped[int | None] = mapped_column(BigInt, nullable=True, index=True)
    status: Mapped[FlowRunStatus] = mapped_column(
        _enum(FlowRunStatus), nullable=False, default=FlowRunStatus.ACTIVE
    )
    step_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The ordinal of the current step execution in this run (1, 2, ...): with the step key it names the ledger
    # row, so a retried execution finds what it already did.
    visit: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # A WAIT step has started (due_at is then when it ends).
    waiting: Mapped[bool] = mapped_column(nullable=False, default=False)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Claimed by the ticker for one job (claim, its row in flow_claims), and the hold the ticker gave it: past
    # lease_until a run is claimed again once its claim's row is gone (expired, or released).
    claim: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Distinguishes entries under the re-entry policy: '' for ONCE, the trigger occurrence otherwise.
    entry_key: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    # What started the run (an event's name and properties), which the templates see as `event`.
    context: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDoc, nullable=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    exit_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        UniqueConstraint("flow_id", "subscriber_id", "entry_key"),
        # The ticker's read: active runs by due time. Finished runs stay out of the index.
        Index("ix_flow_runs_due", "due_at", postgresql_where=RUN_ACTIVE, sqlite_where=RUN_ACTIVE),
        Index("ix_flow_runs_flow_id_status", "flow_id", "status", "id"),
        # Room on each page for a run's next version, so a write that changes no indexed column (being claimed,
        # handed back, moving on to a step due at once) is a HOT update: no index entries. The claim is not
        # indexed for that reason; a claim's runs are found through its row in flow_claims.
        {**AUTOINCREMENT, "postgresql_with": {"fillfactor": 50}},
    )


class FlowClaim(InWorkspace, Base):
    """A chunk of due runs the ticker handed to one job: the claim number written on the runs, which runs, and
    until when the worker that took the job holds them (renewed while it works).

    A send step's hand-over locks this one row (FOR SHARE) instead of each of its runs; a takeover deletes the
    row once its lease has run out, which waits for such a hand-over to commit and makes any later one fail.
    """

    __tablename__ = "flow_claims"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    run_ids: Mapped[list[int]] = mapped_column(JSONDoc, nullable=False)
    runs: Mapped[int] = mapped_column(Integer, nullable=False)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # When a worker took the claim's job (None while it waits in the queue).
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class FlowStepRun(InWorkspace, Base):
    """The step ledger: one row per step a run executed (or is executing)."""

    __tablename__ = "flow_step_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # No foreign key to the run: its check locked the run's row (a write of it) at every step; runs are never
    # deleted, so its cascade never fired.
    run_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    flow_id: Mapped[int] = mapped_column(BigInt, nullable=False)
    step_key: Mapped[str] = mapped_column(String(64), nullable=False)
    visit: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[FlowStepRunStatus] = mapped_column(_enum(FlowStepRunStatus), nullable=False)
    delivery_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Why it was skipped or failed, or which exit a branch took.
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # First open and first click of a SEND's message, set by the feedback loop: the step's unique counts and
    # what a BRANCH on "opened/clicked the email of step K" reads.
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("run_id", "step_key", "visit"),
        Index("ix_flow_step_runs_delivery_id", "delivery_id"),
        # A started step (a SEND's PENDING row, a WAIT's) is settled in place, a HOT update where its page has
        # room. A group's rows are written together and settled together: half a page left free is room for
        # all of them (at 70, only three in seven were HOT; each other settle wrote three index entries).
        {**AUTOINCREMENT, "postgresql_with": {"fillfactor": 50}},
    )


class FlowStepStats(InWorkspace, Base):
    """Counters per step of a flow (across its versions: a step key keeps its meaning)."""

    __tablename__ = "flow_step_stats"

    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    entered: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    completed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    sent: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    opened: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)
    clicked: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)


class FlowSegmentMember(InWorkspace, Base):
    """Who matched a SEGMENT_ENTERED flow's segment when last looked at: entering is starting to match."""

    __tablename__ = "flow_segment_members"

    flow_id: Mapped[int] = mapped_column(ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
