"""senders: a workspace's named provider configurations, and who names one

Revision ID: 0018
Revises: 0017

``senders`` is a root tenant table (reached by its own id from the API; unique name per workspace), with the
workspace policy of every tenant table on PostgreSQL (see migration 0010). ``campaigns.sender_id``,
``lists.sender_id`` and ``deliveries.sender_id`` are nullable columns without references (NULL: the instance's
default sender), added with a plain ALTER TABLE on both databases: instant, no copy of ``deliveries``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from emailkit.db import rls
from emailkit.db.types import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
REFERRERS = ("campaigns", "lists", "deliveries")


def upgrade() -> None:
    op.create_table(
        "senders",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "SMTP",
                "SES",
                "SENDGRID",
                "MAILGUN",
                "POSTMARK",
                "RESEND",
                "BREVO",
                "OUTBOX",
                native_enum=False,
                length=24,
                create_constraint=False,
            ),
            nullable=False,
        ),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("credentials_sealed", sa.Text(), nullable=True),
        sa.Column("credentials_last4", sa.String(length=4), nullable=True),
        sa.Column("rate_per_second", sa.Float(), nullable=True),
        sa.Column("pool_size", sa.Integer(), nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_senders_workspace_id_workspaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_senders")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_senders_workspace_id")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_senders_workspace_id_id", "senders", ["workspace_id", "id"])
    for table in REFERRERS:
        op.add_column(table, sa.Column("sender_id", BIGINT, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in rls.secure_statements("senders"):
            op.execute(statement)


def downgrade() -> None:
    for table in REFERRERS:
        op.execute(f"ALTER TABLE {table} DROP COLUMN sender_id")
    op.drop_index("ix_senders_workspace_id_id", table_name="senders")
    op.drop_table("senders")
