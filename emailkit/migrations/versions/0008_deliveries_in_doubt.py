"""deliveries in doubt

Revision ID: 0008
Revises: 0005

A worker that died while handing a delivery over used to leave it counted as sent, with a note in
``last_error``. Such a delivery is now IN_DOUBT (never counted as sent) and campaigns count them apart.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The note the pipeline wrote on the rows it settled as sent (emailkit.domain.sending.ledger.IN_DOUBT_NOTE).
LEGACY_NOTE = "outcome unknown: the worker stopped while handing this message to the provider"


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: a batch-mode copy of `campaigns` on SQLite would cascade-delete
    # every delivery when the old table is dropped.
    op.add_column("campaigns", sa.Column("in_doubt_count", BIGINT, nullable=False, server_default="0"))
    note: sa.BindParameter[str] = sa.bindparam("note", LEGACY_NOTE)
    op.execute(
        sa.text(
            "UPDATE campaigns SET "
            "in_doubt_count = (SELECT count(*) FROM deliveries d WHERE d.campaign_id = campaigns.id "
            "AND d.status = 'SENT' AND d.last_error = :note), "
            "sent_count = sent_count - (SELECT count(*) FROM deliveries d WHERE d.campaign_id = campaigns.id "
            "AND d.status = 'SENT' AND d.last_error = :note) "
            "WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = campaigns.id "
            "AND d.status = 'SENT' AND d.last_error = :note)"
        ).bindparams(note)
    )
    op.execute(
        sa.text(
            "UPDATE deliveries SET status = 'IN_DOUBT', sent_at = NULL WHERE status = 'SENT' AND last_error = :note"
        ).bindparams(note)
    )


def downgrade() -> None:
    op.execute(
        sa.text("UPDATE campaigns SET sent_count = sent_count + in_doubt_count WHERE in_doubt_count > 0")
    )
    op.execute(
        sa.text("UPDATE deliveries SET status = 'SENT', sent_at = updated_at WHERE status = 'IN_DOUBT'")
    )
    op.execute("ALTER TABLE campaigns DROP COLUMN in_doubt_count")
