"""outgoing webhooks: endpoints, their messages (the outbox) and the attempts (the delivery log)

Revision ID: 0012
Revises: 0011

Three tenant tables. ``webhook_endpoints`` is a root table (reached by its own id from the API): it references
``workspaces`` and has the (workspace_id, id) listing index. ``webhook_messages`` and ``webhook_attempts`` are
children: their endpoint decides the workspace, so they carry the column without a reference, like a
campaign's deliveries. A message does not reference its endpoint either (an emitter's cache may name one just
deleted; see the model); an attempt references its message, and goes with it.

On PostgreSQL each gets the same FORCEd row-level security and ``workspace_isolation`` policy as the tables of
0010 (both take it from ``emailkit.db.rls``, so they can never differ). SQLite gets plain tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types
from emailkit.db import rls

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = emailkit.db.types.UTCDateTime(timezone=True)

TABLES = ["webhook_endpoints", "webhook_messages", "webhook_attempts"]


def _enum(*values: str) -> sa.Enum:
    return sa.Enum(*values, native_enum=False, length=24, create_constraint=False)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret_sealed", sa.String(length=255), nullable=False),
        sa.Column("status", _enum("ENABLED", "DISABLED"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", UTC, nullable=True),
        sa.Column("failing_since", UTC, nullable=True),
        sa.Column("enqueued_at", UTC, nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_webhook_endpoints_workspace_id_workspaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_endpoints_workspace_id_id", "webhook_endpoints", ["workspace_id", "id"])
    op.create_table(
        "webhook_messages",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("endpoint_id", BIGINT, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("ordering_key", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", _enum("PENDING", "SUCCEEDED", "FAILED"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=True),
        sa.Column("last_attempt_at", UTC, nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("redelivery_of", BIGINT, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_messages")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_webhook_messages_endpoint_id_status_id", "webhook_messages", ["endpoint_id", "status", "id"]
    )
    op.create_index("ix_webhook_messages_endpoint_id_id", "webhook_messages", ["endpoint_id", "id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("message_id", BIGINT, nullable=False),
        sa.Column("attempted_at", UTC, nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["webhook_messages.id"],
            name=op.f("fk_webhook_attempts_message_id_webhook_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_attempts_message_id_id", "webhook_attempts", ["message_id", "id"])

    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            for statement in rls.secure_statements(table):
                op.execute(statement)


def downgrade() -> None:
    # Dropping a table drops its policy with it.
    op.drop_index("ix_webhook_attempts_message_id_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_messages_endpoint_id_id", table_name="webhook_messages")
    op.drop_index("ix_webhook_messages_endpoint_id_status_id", table_name="webhook_messages")
    op.drop_table("webhook_messages")
    op.drop_index("ix_webhook_endpoints_workspace_id_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
