"""flow claims record when a worker took them

Revision ID: 0024
Revises: 0023

The ticker stopped claiming once 16 chunks of runs were claimed and not yet handed back, however many workers
there were: past 16 worker threads, the rest never had flow work. It now bounds only the chunks waiting in the
queue (claimed, not yet taken), by the number being worked on: a claim's taking is written on its row.

A nullable column on a small table: instant. Claims made before it count as waiting until they end.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailkit.db.types import UTCDateTime

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("flow_claims") as batch_op:
        batch_op.add_column(sa.Column("taken_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flow_claims") as batch_op:
        batch_op.drop_column("taken_at")
