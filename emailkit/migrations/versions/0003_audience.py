"""audience tables

Revision ID: 0003
Revises: 0002

Segments and the segments a campaign targets, plus the PostgreSQL indexes the segment compiler relies on.
SQLite cannot use those indexes; it gets always-false partial indexes of the same name (no entries, no cost)
so that models and migrations agree on both backends.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = emailkit.db.types.UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SQLITE_NEVER = sa.text("0")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("filter", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "campaign_segments",
        sa.Column("campaign_id", BIGINT, nullable=False),
        sa.Column("segment_id", BIGINT, nullable=False),
        sa.Column("definition", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_segments_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_campaign_segments_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "segment_id", name=op.f("pk_campaign_segments")),
    )
    op.create_index(
        op.f("ix_campaign_segments_segment_id"), "campaign_segments", ["segment_id"], unique=False
    )
    op.create_index(
        "ix_subscribers_attributes_path_ops",
        "subscribers",
        ["attributes"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
        sqlite_where=SQLITE_NEVER,
    )
    op.create_index(
        "ix_deliveries_sent_at_subscriber_id",
        "deliveries",
        ["sent_at", "subscriber_id"],
        unique=False,
        postgresql_where=sa.text("status = 'SENT'"),
        sqlite_where=SQLITE_NEVER,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_sent_at_subscriber_id", table_name="deliveries")
    op.drop_index("ix_subscribers_attributes_path_ops", table_name="subscribers")
    op.drop_index(op.f("ix_campaign_segments_segment_id"), table_name="campaign_segments")
    op.drop_table("campaign_segments")
    op.drop_table("segments")
