"""automation: lighter writes on a flow's hot path — the step ledger loses its foreign key to the run, and
``flow_runs`` leaves room on its pages

Revision ID: 0017
Revises: 0016

Every ledger row a step writes checked its run through the foreign key, which on PostgreSQL takes a KEY SHARE
lock on the run's row: a write to the run's tuple per step, on top of the step's own. Runs are never deleted
(flows are archived; erasing a person clears the run's ``subscriber_id``), so the cascade it carried never
fires; the unique (run, step, visit) index still serves lookups by run.

On PostgreSQL ``flow_runs`` gets a fillfactor of 80: a run's lease is renewed in place (a HOT update, no index
entries) only when its page has room for the new version, which a table filled by a bulk entry never has.
Existing pages keep their fill until rewritten; new ones are filled to 80%.

Both steps are catalogue changes (SQLite rebuilds the small ledger table in a batch): quick on both databases.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("flow_step_runs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_flow_step_runs_run_id_flow_runs", type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE flow_runs SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE flow_runs RESET (fillfactor)")
    with op.batch_alter_table("flow_step_runs", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_flow_step_runs_run_id_flow_runs", "flow_runs", ["run_id"], ["id"], ondelete="CASCADE"
        )
