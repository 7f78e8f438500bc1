"""custom events: a name and properties on events, and their idempotency keys

Revision ID: 0015
Revises: 0014

Custom events (type CUSTOM, sent by the user's own systems) are stored in ``events`` like the feedback loop's:
two nullable columns hold their ``name`` and ``properties``. Adding a nullable column without a default
changes only the catalog, on a partitioned table too (PostgreSQL adds it to every partition), and on SQLite.
The type column is a VARCHAR without a CHECK constraint on both databases (see ``db.tables.base._enum``), so
the new value needs no change there.

``custom_event_keys`` holds their idempotency keys, unique per workspace (its primary key), with the
workspace policy of every tenant table on PostgreSQL (see migration 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types
from emailkit.db import rls

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC = emailkit.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (a batch-mode copy of `events` on SQLite would be slow for nothing).
    op.add_column("events", sa.Column("name", sa.String(length=100), nullable=True))
    op.add_column("events", sa.Column("properties", JSON, nullable=True))
    op.create_table(
        "custom_event_keys",
        sa.Column("key", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("event_id", BIGINT, nullable=True),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.Column("seen_at", UTC, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "key", name="pk_custom_event_keys"),
    )
    op.create_index("ix_custom_event_keys_seen_at", "custom_event_keys", ["seen_at"], postgresql_using="brin")
    if op.get_bind().dialect.name == "postgresql":
        for statement in rls.secure_statements("custom_event_keys"):
            op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_custom_event_keys_seen_at", table_name="custom_event_keys")
    op.drop_table("custom_event_keys")
    # Without their name and properties they mean nothing, and the code before knows no CUSTOM type.
    op.execute("DELETE FROM events WHERE type = 'CUSTOM'")
    op.execute("ALTER TABLE events DROP COLUMN properties")
    op.execute("ALTER TABLE events DROP COLUMN name")
