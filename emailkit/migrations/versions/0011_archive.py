"""web view link and public archive of campaigns

Revision ID: 0011
Revises: 0010

Three columns on ``campaigns``: ``web_view_link`` (a "View in browser" line at the top of each message),
``archive`` (listed in the workspace's public archive once sent) and ``archive_data`` (the placeholder subscriber
fields the archive renders with; NULL: neutral defaults). Both flags default to false, so existing campaigns send
and show exactly as before.

Plain ALTER TABLE on both databases (constant defaults: no table rewrite on PostgreSQL 11+); a batch-mode copy of
``campaigns`` on SQLite would cascade-delete every delivery when the old table is dropped. No index: the archive
lists one workspace's campaigns, which its (workspace_id, id) index already narrows to.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column(
        "campaigns", sa.Column("web_view_link", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("campaigns", sa.Column("archive", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("campaigns", sa.Column("archive_data", JSON, nullable=True))


def downgrade() -> None:
    for column in ("archive_data", "archive", "web_view_link"):
        op.execute(f"ALTER TABLE campaigns DROP COLUMN {column}")
