"""a partial index for the ticker's read of transactional deliveries left QUEUED

Revision ID: 0021
Revises: 0020

The read filtered on (campaign_id IS NULL, flow_run_id IS NULL, status QUEUED) through
ix_deliveries_campaign_id_status, whose NULL-campaign range holds every flow delivery too: with a 100k-person
flow it cost the ticker 0.15-0.2 s per tick per worker. Only the few transactional rows waiting are in this one.

Built inside the migration's transaction like 0009's indexes (`emailkit migrate` is all or nothing, which
CONCURRENTLY cannot join): the build reads the whole deliveries table while writes to it wait. For a table of
many millions of rows, create it beforehand with `CREATE INDEX CONCURRENTLY ix_deliveries_transactional_queued
ON deliveries (updated_at) WHERE campaign_id IS NULL AND flow_run_id IS NULL AND status = 'QUEUED'`; this
migration then keeps it, and rebuilds it only if a failed concurrent build left it invalid.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_deliveries_transactional_queued"
PREDICATE = sa.text("campaign_id IS NULL AND flow_run_id IS NULL AND status = 'QUEUED'")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        invalid = bind.execute(
            sa.text(
                "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
            ),
            {"name": NAME},
        ).scalar_one_or_none()
        if invalid:
            op.drop_index(NAME, "deliveries")
    op.create_index(
        NAME,
        "deliveries",
        ["updated_at"],
        postgresql_where=PREDICATE,
        sqlite_where=PREDICATE,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index(NAME, "deliveries", if_exists=True)
