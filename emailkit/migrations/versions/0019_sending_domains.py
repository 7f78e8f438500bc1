"""sending domains: a workspace's From domains, their DKIM keys and the state of their DNS records

Revision ID: 0019
Revises: 0018

One root tenant table (reached by its own id from the API), unique per workspace and domain, with the
(workspace_id, id) listing index. New and empty: instant on both databases. On PostgreSQL it carries the
workspace policy of every tenant table (see migration 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from emailkit.db import rls
from emailkit.db.types import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sending_domains",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("private_key_sealed", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("ed25519_selector", sa.String(length=63), nullable=True),
        sa.Column("ed25519_private_key_sealed", sa.Text(), nullable=True),
        sa.Column("ed25519_public_key", sa.String(length=64), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("verified_at", TS, nullable=True),
        sa.Column("last_checked_at", TS, nullable=True),
        sa.Column("checks", JSON, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_sending_domains_workspace_id_workspaces"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sending_domains")),
        sa.UniqueConstraint("workspace_id", "domain", name="uq_sending_domains_workspace_id_domain"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sending_domains_workspace_id_id", "sending_domains", ["workspace_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in rls.secure_statements("sending_domains"):
            op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_sending_domains_workspace_id_id", table_name="sending_domains")
    op.drop_table("sending_domains")
