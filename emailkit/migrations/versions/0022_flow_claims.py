"""flow claims: one row per chunk of runs handed to a job, instead of a lease on each run

Revision ID: 0022
Revises: 0021

A flow send step's hand-over locked each of its runs FOR SHARE (a lock written on every run's row, through its
primary key, at every message) and a worker renewed its lease on all its runs; it now locks and renews the
claim's one row. The claim is no longer indexed on flow_runs, so being claimed and handed back are HOT updates
(flow_runs keeps room on its pages for them); the claim's row names its runs. flow_step_runs gets room on its
pages too, so that settling a started step rewrites no index.

New table and a dropped index: instant. Runs claimed under the old scheme when this runs have no claim row;
they are claimed again once the hold the ticker gave them has run out (a minute), and an old job still queued
finds nothing of its own.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from emailkit.db import rls
from emailkit.db.types import UTCDateTime

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
CLAIMED = sa.text("claim IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "flow_claims",
        sa.Column("id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("run_ids", JSON, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("lease_until", TS, nullable=False),
        sa.Column("workspace_id", BIGINT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_claims")),
    )
    with op.batch_alter_table("flow_runs") as batch_op:
        batch_op.drop_index("ix_flow_runs_claim")
    if op.get_bind().dialect.name == "postgresql":
        for statement in rls.secure_statements("flow_claims"):
            op.execute(statement)
        op.execute("ALTER TABLE flow_step_runs SET (fillfactor = 70)")
        op.execute("ALTER TABLE flow_runs SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE flow_step_runs RESET (fillfactor)")
        op.execute("ALTER TABLE flow_runs SET (fillfactor = 80)")
    with op.batch_alter_table("flow_runs") as batch_op:
        batch_op.create_index("ix_flow_runs_claim", ["claim"], postgresql_where=CLAIMED, sqlite_where=CLAIMED)
    op.drop_table("flow_claims")
