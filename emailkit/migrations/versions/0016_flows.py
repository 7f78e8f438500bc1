"""automation: flows, their published versions, each person's run, and the step ledger

Revision ID: 0016
Revises: 0015

``flows`` is a root table (reached by its own id from the API); ``flow_versions``, ``flow_runs``,
``flow_step_runs`` (the ledger: unique on run, step and visit) and ``flow_step_stats`` are its children. The
ticker's read of due runs is served by a partial index on ``flow_runs.due_at`` over ACTIVE runs only, so people
who finished cost the index nothing. ``deliveries.flow_run_id`` marks the messages of a flow's SEND steps.

New tables are empty and the new column is nullable: instant on both databases. On PostgreSQL the new tables
carry the workspace policy of every tenant table (see migration 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from emailkit.db import rls
from emailkit.db.types import UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)
NEW_TABLES = (
    "flows",
    "flow_versions",
    "flow_runs",
    "flow_step_runs",
    "flow_step_stats",
    "flow_segment_members",
)


def _enum(*values: str) -> sa.Enum:
    return sa.Enum(*values, native_enum=False, length=24, create_constraint=False)


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("status", _enum("DRAFT", "ACTIVE", "PAUSED", "ARCHIVED"), nullable=False),
        sa.Column("draft", JSON, nullable=False),
        sa.Column("version_id", BIGINT, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "trigger_type",
            _enum("SUBSCRIBED", "EVENT", "DATE_ATTRIBUTE", "SEGMENT_ENTERED", "ENGAGED"),
            nullable=True,
        ),
        sa.Column("trigger_list_id", BIGINT, nullable=True),
        sa.Column("trigger_event", sa.String(length=100), nullable=True),
        sa.Column("trigger_segment_id", BIGINT, nullable=True),
        sa.Column("trigger_campaign_id", BIGINT, nullable=True),
        sa.Column("entered", BIGINT, nullable=False),
        sa.Column("active", BIGINT, nullable=False),
        sa.Column("completed", BIGINT, nullable=False),
        sa.Column("exited", BIGINT, nullable=False),
        sa.Column("trigger_state", NULLABLE_JSON, nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_flows_workspace_id_workspaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.create_index("ix_flows_trigger", ["workspace_id", "status", "trigger_type"], unique=False)
        batch_op.create_index("ix_flows_workspace_id_id", ["workspace_id", "id"], unique=False)

    op.create_table(
        "flow_runs",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("flow_id", BIGINT, nullable=False),
        sa.Column("version_id", BIGINT, nullable=False),
        sa.Column("subscriber_id", BIGINT, nullable=True),
        sa.Column("status", _enum("ACTIVE", "COMPLETED", "EXITED"), nullable=False),
        sa.Column("step_key", sa.String(length=64), nullable=True),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("claim", BIGINT, nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("entry_key", sa.String(length=255), nullable=False),
        sa.Column("context", NULLABLE_JSON, nullable=True),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("exit_reason", sa.String(length=64), nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_runs")),
        sa.UniqueConstraint("flow_id", "subscriber_id", "entry_key", name=op.f("uq_flow_runs_flow_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_flow_runs_due",
            ["due_at"],
            unique=False,
            postgresql_where=sa.text("status = 'ACTIVE'"),
            sqlite_where=sa.text("status = 'ACTIVE'"),
        )
        batch_op.create_index("ix_flow_runs_flow_id_status", ["flow_id", "status", "id"], unique=False)
        batch_op.create_index(
            "ix_flow_runs_claim",
            ["claim"],
            unique=False,
            postgresql_where=sa.text("claim IS NOT NULL"),
            sqlite_where=sa.text("claim IS NOT NULL"),
        )
        batch_op.create_index(batch_op.f("ix_flow_runs_subscriber_id"), ["subscriber_id"], unique=False)

    op.create_table(
        "flow_step_stats",
        sa.Column("flow_id", BIGINT, nullable=False),
        sa.Column("step_key", sa.String(length=64), nullable=False),
        sa.Column("entered", BIGINT, nullable=False),
        sa.Column("completed", BIGINT, nullable=False),
        sa.Column("sent", BIGINT, nullable=False),
        sa.Column("skipped", BIGINT, nullable=False),
        sa.Column("failed", BIGINT, nullable=False),
        sa.Column("opened", BIGINT, nullable=False),
        sa.Column("clicked", BIGINT, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_step_stats_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "step_key", name=op.f("pk_flow_step_stats")),
    )
    op.create_table(
        "flow_versions",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("flow_id", BIGINT, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_versions_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_versions")),
        sa.UniqueConstraint("flow_id", "version", name=op.f("uq_flow_versions_flow_id")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "flow_step_runs",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("run_id", BIGINT, nullable=False),
        sa.Column("flow_id", BIGINT, nullable=False),
        sa.Column("step_key", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _enum("PENDING", "DONE", "SENT", "SKIPPED", "FAILED", "IN_DOUBT"),
            nullable=False,
        ),
        sa.Column("delivery_id", BIGINT, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("opened_at", TS, nullable=True),
        sa.Column("clicked_at", TS, nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["flow_runs.id"], name=op.f("fk_flow_step_runs_run_id_flow_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_step_runs")),
        sa.UniqueConstraint("run_id", "step_key", "visit", name=op.f("uq_flow_step_runs_run_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("flow_step_runs", schema=None) as batch_op:
        batch_op.create_index("ix_flow_step_runs_delivery_id", ["delivery_id"], unique=False)

    op.create_table(
        "flow_segment_members",
        sa.Column("flow_id", BIGINT, nullable=False),
        sa.Column("subscriber_id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_segment_members_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "subscriber_id", name=op.f("pk_flow_segment_members")),
    )
    # Who changed lately, for SEGMENT_ENTERED flows: an index build over existing rows (on PostgreSQL it
    # holds writes to the table while it runs; seconds for a million subscribers).
    op.create_index("ix_subscribers_workspace_id_updated_at", "subscribers", ["workspace_id", "updated_at"])
    op.create_index(
        "ix_subscriptions_workspace_id_updated_at", "subscriptions", ["workspace_id", "updated_at"]
    )
    # Plain ALTER TABLE on both databases (a batch-mode copy of `deliveries` on SQLite would be slow for
    # nothing: the column is nullable).
    op.add_column("deliveries", sa.Column("flow_run_id", BIGINT, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in NEW_TABLES:
            for statement in rls.secure_statements(table):
                op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_subscriptions_workspace_id_updated_at", table_name="subscriptions")
    op.drop_index("ix_subscribers_workspace_id_updated_at", table_name="subscribers")
    op.drop_table("flow_segment_members")
    op.execute("ALTER TABLE deliveries DROP COLUMN flow_run_id")

    with op.batch_alter_table("flow_step_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_step_runs_delivery_id")

    op.drop_table("flow_step_runs")
    op.drop_table("flow_versions")
    op.drop_table("flow_step_stats")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_runs_subscriber_id"))
        batch_op.drop_index("ix_flow_runs_claim")
        batch_op.drop_index("ix_flow_runs_flow_id_status")
        batch_op.drop_index(
            "ix_flow_runs_due",
            postgresql_where=sa.text("status = 'ACTIVE'"),
            sqlite_where=sa.text("status = 'ACTIVE'"),
        )

    op.drop_table("flow_runs")
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_index("ix_flows_workspace_id_id")
        batch_op.drop_index("ix_flows_trigger")

    op.drop_table("flows")
