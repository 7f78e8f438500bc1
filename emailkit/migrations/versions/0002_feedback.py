"""feedback tables

Revision ID: 0002
Revises: 0001

On PostgreSQL ``events`` is range-partitioned by month on ``occurred_at`` (raw DDL: Alembic has no
operation for it), with a DEFAULT partition and the monthly partitions of the next months created here;
:func:`emailkit.domain.feedback.partitions.maintain_event_partitions` keeps creating them afterwards.
SQLite gets a plain table.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types
from emailkit.domain.feedback import partitions

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = emailkit.db.types.UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=24)


EVENT_TYPES = ("DELIVERED", "BOUNCE", "COMPLAINT", "OPEN", "CLICK", "UNSUBSCRIBE", "DROPPED", "DEFERRED")

PG_EVENTS = """
CREATE TABLE events (
    id BIGSERIAL NOT NULL,
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    type VARCHAR(24) NOT NULL,
    bounce_type VARCHAR(24),
    provider VARCHAR(32) NOT NULL,
    provider_message_id VARCHAR(255),
    email VARCHAR(320),
    campaign_id BIGINT,
    delivery_id BIGINT,
    subscriber_id BIGINT,
    url TEXT,
    user_agent TEXT,
    ip VARCHAR(64),
    reason TEXT,
    metadata JSONB,
    dedupe_key UUID,
    CONSTRAINT pk_events PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at)
"""


def _create_events() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_EVENTS)
    else:
        op.create_table(
            "events",
            sa.Column("id", BIGINT, nullable=False),
            sa.Column("occurred_at", TS, nullable=False),
            sa.Column("recorded_at", TS, nullable=False),
            sa.Column("type", _enum("eventtype", *EVENT_TYPES), nullable=False),
            sa.Column("bounce_type", _enum("bouncetype", "HARD", "SOFT"), nullable=True),
            sa.Column("provider", sa.String(length=32), nullable=False),
            sa.Column("provider_message_id", sa.String(length=255), nullable=True),
            sa.Column("email", sa.String(length=320), nullable=True),
            sa.Column("campaign_id", BIGINT, nullable=True),
            sa.Column("delivery_id", BIGINT, nullable=True),
            sa.Column("subscriber_id", BIGINT, nullable=True),
            sa.Column("url", sa.Text(), nullable=True),
            sa.Column("user_agent", sa.Text(), nullable=True),
            sa.Column("ip", sa.String(length=64), nullable=True),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("metadata", JSON, nullable=True),
            sa.Column("dedupe_key", sa.Uuid(as_uuid=False), nullable=True),
            # SQLite auto-assigns only a lone INTEGER PRIMARY KEY; there is no partitioning to satisfy.
            sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
            sqlite_autoincrement=True,
        )
    op.create_index("ix_events_campaign_id_id", "events", ["campaign_id", "id"])
    op.create_index("ix_events_subscriber_id_id", "events", ["subscriber_id", "id"])
    op.create_index("ix_events_email_id", "events", ["email", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in partitions.setup_statements() + partitions.partition_statements(datetime.now(UTC)):
            op.execute(statement)


def upgrade() -> None:
    _create_events()
    op.create_table(
        "event_keys",
        sa.Column("key", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_event_keys")),
    )
    op.create_index("ix_event_keys_seen_at", "event_keys", ["seen_at"], postgresql_using="brin")
    op.create_table(
        "suppressions",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "reason",
            _enum("suppressionreason", "HARD_BOUNCE", "SOFT_BOUNCE", "COMPLAINT", "MANUAL"),
            nullable=False,
        ),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", BIGINT, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_suppressions_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("email", name=op.f("uq_suppressions_email")),
        sa.UniqueConstraint("email_hash", name=op.f("uq_suppressions_email_hash")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "campaign_stats",
        sa.Column("campaign_id", BIGINT, autoincrement=False, nullable=False),
        *(
            sa.Column(name, BIGINT, nullable=False)
            for name in (
                "delivered",
                "bounced",
                "complained",
                "opens",
                "unique_opens",
                "clicks",
                "unique_clicks",
                "unsubscribed",
            )
        ),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_stats_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_stats")),
    )
    op.create_table(
        "campaign_links",
        sa.Column("campaign_id", BIGINT, nullable=False),
        sa.Column("url_hash", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", BIGINT, nullable=False),
        sa.Column("unique_clicks", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_links_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "url_hash", name=op.f("pk_campaign_links")),
    )
    op.create_table(
        "campaign_firsts",
        sa.Column("campaign_id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("recipient", BIGINT, autoincrement=False, nullable=False),
        sa.Column("marker", BIGINT, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "recipient", "marker", name=op.f("pk_campaign_firsts")),
    )
    op.create_table(
        "campaign_timeline",
        sa.Column("campaign_id", BIGINT, nullable=False),
        sa.Column("bucket", TS, nullable=False),
        sa.Column("type", _enum("eventtype", *EVENT_TYPES), nullable=False),
        sa.Column("count", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_timeline_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "bucket", "type", name=op.f("pk_campaign_timeline")),
    )


def downgrade() -> None:
    op.drop_table("campaign_timeline")
    op.drop_table("campaign_firsts")
    op.drop_table("campaign_links")
    op.drop_table("campaign_stats")
    op.drop_table("suppressions")
    op.drop_index("ix_event_keys_seen_at", table_name="event_keys")
    op.drop_table("event_keys")
    # Dropping the parent drops every partition with it.
    op.drop_table("events")
    if op.get_bind().dialect.name == "postgresql":
        # Left in place (and the downgrade refused) if someone parked detached partitions there.
        op.execute(f'DROP SCHEMA IF EXISTS "{partitions.PARTITION_SCHEMA}"')
