"""sender warm-up: a plan of messages per day on a sender, and what it handed over today

Revision ID: 0020
Revises: 0019

Nullable columns and one with a constant default on senders: instant on both databases (PostgreSQL 11+ does
not rewrite the table for a constant default), and the table is small anyway.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("senders", sa.Column("warmup_start_per_day", sa.Integer(), nullable=True))
    op.add_column("senders", sa.Column("warmup_growth_percent", sa.Float(), nullable=True))
    op.add_column("senders", sa.Column("warmup_ceiling_per_day", sa.Integer(), nullable=True))
    op.add_column("senders", sa.Column("warmup_starts_on", sa.Date(), nullable=True))
    op.add_column("senders", sa.Column("warmup_day", sa.Date(), nullable=True))
    op.add_column("senders", sa.Column("warmup_sent", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("senders") as batch:
        for column in (
            "warmup_sent",
            "warmup_day",
            "warmup_starts_on",
            "warmup_ceiling_per_day",
            "warmup_growth_percent",
            "warmup_start_per_day",
        ):
            batch.drop_column(column)
