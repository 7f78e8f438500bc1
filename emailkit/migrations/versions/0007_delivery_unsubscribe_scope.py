"""deliveries.via_list_ids: the lists an unsubscribe from a delivery leaves

Revision ID: 0007
Revises: 0005

Nullable and without a default, so adding it rewrites no rows (a catalogue change on PostgreSQL, a plain
ALTER TABLE ADD COLUMN on SQLite).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("via_list_ids", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("via_list_ids")
