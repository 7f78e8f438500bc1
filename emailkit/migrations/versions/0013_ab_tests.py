"""A/B tests of campaigns

Revision ID: 0013
Revises: 0012

A campaign may test 2 to 5 variants (``campaign_variants``: what each changes of the subject, sender name or
content) on a share of its audience before the rest gets the winner (``campaign_ab_tests``: the settings, and
how the test went). Each delivery records its variant (``deliveries.variant_id``), and the feedback counters
are kept per variant too (``campaign_variant_stats``).

New tables are empty and the new column is nullable: instant on both databases. On PostgreSQL the new tables
carry the workspace policy of every tenant table (see migration 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailkit.db import rls
from emailkit.db.types import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = UTCDateTime(timezone=True)
COUNTERS = (
    "delivered",
    "bounced",
    "complained",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "unsubscribed",
)
NEW_TABLES = ("campaign_variants", "campaign_ab_tests", "campaign_variant_stats")


def _enum(*values: str) -> sa.Enum:
    return sa.Enum(*values, native_enum=False, length=24, create_constraint=False)


def _variants() -> None:
    op.create_table(
        "campaign_variants",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("campaign_id", BIGINT, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=True),
        sa.Column("from_name", sa.String(length=255), nullable=True),
        sa.Column("template_id", BIGINT, nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("format", _enum("MJML", "HTML"), nullable=True),
        sa.Column("sent_count", BIGINT, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_variants_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_campaign_variants_template_id_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_variants")),
        sa.UniqueConstraint("campaign_id", "position", name=op.f("uq_campaign_variants_campaign_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_campaign_variants_template_id"), "campaign_variants", ["template_id"])


def _ab_tests() -> None:
    op.create_table(
        "campaign_ab_tests",
        sa.Column("campaign_id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("test_share", sa.Float(), nullable=False),
        sa.Column("metric", _enum("OPENS", "CLICKS"), nullable=False),
        sa.Column("wait_seconds", sa.Integer(), nullable=False),
        sa.Column("test_sent_at", TS, nullable=True),
        sa.Column("decide_at", TS, nullable=True),
        sa.Column("winner_variant_id", BIGINT, nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("decided_by", _enum("AUTOMATIC", "MANUAL"), nullable=True),
        sa.Column("lift", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("z_score", sa.Float(), nullable=True),
        sa.Column("remainder_started_at", TS, nullable=True),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_ab_tests_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["winner_variant_id"],
            ["campaign_variants.id"],
            name=op.f("fk_campaign_ab_tests_winner_variant_id_campaign_variants"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_ab_tests")),
    )
    op.create_index(op.f("ix_campaign_ab_tests_decide_at"), "campaign_ab_tests", ["decide_at"])


def _variant_stats() -> None:
    op.create_table(
        "campaign_variant_stats",
        sa.Column("campaign_id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("variant_id", BIGINT, autoincrement=False, nullable=False),
        *(sa.Column(name, BIGINT, nullable=False) for name in COUNTERS),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_variant_stats_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["campaign_variants.id"],
            name=op.f("fk_campaign_variant_stats_variant_id_campaign_variants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "variant_id", name=op.f("pk_campaign_variant_stats")),
    )


def upgrade() -> None:
    _variants()
    _ab_tests()
    _variant_stats()
    # Plain ALTER TABLE on both databases (a batch-mode copy of `deliveries` on SQLite would be slow for
    # nothing: the column is nullable).
    op.add_column("deliveries", sa.Column("variant_id", BIGINT, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in NEW_TABLES:
            for statement in rls.secure_statements(table):
                op.execute(statement)


def downgrade() -> None:
    op.execute("ALTER TABLE deliveries DROP COLUMN variant_id")
    op.drop_table("campaign_variant_stats")
    op.drop_index(op.f("ix_campaign_ab_tests_decide_at"), table_name="campaign_ab_tests")
    op.drop_table("campaign_ab_tests")
    op.drop_index(op.f("ix_campaign_variants_template_id"), table_name="campaign_variants")
    op.drop_table("campaign_variants")
