"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 08:47:26.091723
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum("ADMIN", "EDITOR", "VIEWER", name="role", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("ENABLED", "BLOCKLISTED", name="subscriberstatus", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
        sa.UniqueConstraint("email", name=op.f("uq_subscribers_email")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("CAMPAIGN", "TRANSACTIONAL", name="templatekind", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "format",
            sa.Enum("MJML", "HTML", name="contentformat", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "lists",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "optin", sa.Enum("SINGLE", "DOUBLE", name="optin", native_enum=False, length=24), nullable=False
        ),
        sa.Column(
            "visibility",
            sa.Enum("PUBLIC", "PRIVATE", name="visibility", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("optin_template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["optin_template_id"],
            ["templates.id"],
            name=op.f("fk_lists_optin_template_id_templates"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "DRAFT",
                "SCHEDULED",
                "RUNNING",
                "PAUSED",
                "FINISHED",
                "CANCELLED",
                "FAILED",
                name="campaignstatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("from_email", sa.String(length=320), nullable=False),
        sa.Column("from_name", sa.String(length=255), nullable=False),
        sa.Column("reply_to", sa.String(length=320), nullable=True),
        sa.Column("template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column(
            "format",
            sa.Enum("MJML", "HTML", name="contentformat", native_enum=False, length=24),
            nullable=True,
        ),
        sa.Column("plain_text", sa.Text(), nullable=True),
        sa.Column("track_opens", sa.Boolean(), nullable=False),
        sa.Column("track_clicks", sa.Boolean(), nullable=False),
        sa.Column("send_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("audience_max_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("recipients_count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sent_count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("failed_count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("skipped_count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("started_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_campaigns_template_id_templates"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_campaigns_template_id"), ["template_id"], unique=False)

    op.create_table(
        "subscriptions",
        sa.Column("subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "UNCONFIRMED",
                "CONFIRMED",
                "UNSUBSCRIBED",
                name="subscriptionstatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_subscriptions_list_id_lists"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriptions_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "list_id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscriptions_list_id_status", ["list_id", "status", "subscriber_id"], unique=False
        )

    op.create_table(
        "campaign_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lo_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hi_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "status",
            sa.Enum("PENDING", "RUNNING", "DONE", name="batchstatus", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_batches_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_batches")),
        sa.UniqueConstraint("campaign_id", "lo_id", name=op.f("uq_campaign_batches_campaign_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("campaign_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_campaign_batches_campaign_id_status", ["campaign_id", "status"], unique=False
        )

    op.create_table(
        "campaign_lists",
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_lists_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_campaign_lists_list_id_lists"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "list_id", name=op.f("pk_campaign_lists")),
    )
    with op.batch_alter_table("campaign_lists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_lists_list_id"), ["list_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "QUEUED",
                "SENDING",
                "SENT",
                "FAILED",
                "SKIPPED",
                name="deliverystatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_deliveries_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_deliveries_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_deliveries_template_id_templates"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("campaign_id", "subscriber_id", name=op.f("uq_deliveries_campaign_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_campaign_id_status", ["campaign_id", "status", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_provider_message_id"), ["provider_message_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_deliveries_subscriber_id"), ["subscriber_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_provider_message_id"))
        batch_op.drop_index("ix_deliveries_campaign_id_status")

    op.drop_table("deliveries")
    with op.batch_alter_table("campaign_lists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_lists_list_id"))

    op.drop_table("campaign_lists")
    with op.batch_alter_table("campaign_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_batches_campaign_id_status")

    op.drop_table("campaign_batches")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_list_id_status")

    op.drop_table("subscriptions")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_template_id"))
        batch_op.drop_index(batch_op.f("ix_campaigns_status"))

    op.drop_table("campaigns")
    op.drop_table("lists")
    op.drop_table("templates")
    op.drop_table("subscribers")
    op.drop_table("api_keys")
