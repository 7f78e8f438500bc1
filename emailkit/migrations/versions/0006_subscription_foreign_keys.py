"""subscriptions' foreign keys declared again on PostgreSQL

Revision ID: 0006
Revises: 0005

Migration 0005 replaced the two foreign keys of ``subscriptions`` with statement-level triggers. They were
weaker than the keys: under REPEATABLE READ or SERIALIZABLE a delete's cascade ran on the transaction's
snapshot and missed subscriptions committed meanwhile (orphans, where a key raises a serialization failure),
and skipping the lock on rows with ``xmin`` equal to the current transaction id took frozen rows for the
transaction's own after xid wraparound. PostgreSQL's own referential checks handle both, so the keys are back,
under their original names, ``ON DELETE CASCADE`` as in 0001; the triggers and their functions go.

Subscriptions that lost their list or subscriber through those races are deleted first: the cascade would
have removed them, and the keys cannot be validated while they exist.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETE_ORPHANS = """
DELETE FROM subscriptions AS s
 WHERE NOT EXISTS (SELECT 1 FROM lists AS l WHERE l.id = s.list_id)
    OR NOT EXISTS (SELECT 1 FROM subscribers AS p WHERE p.id = s.subscriber_id)
"""


def _triggers_revision() -> ModuleType:
    """Migration 0005 itself: its downgrade is this upgrade (drop the triggers, declare the keys), its
    upgrade this downgrade, so the two stay exact mirrors."""
    path = Path(__file__).with_name("0005_subscription_references.py")
    spec = importlib.util.spec_from_file_location("emailkit_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Nothing may subscribe or delete between the orphan sweep and the new keys' validation.
    op.execute("LOCK TABLE lists, subscribers, subscriptions IN SHARE ROW EXCLUSIVE MODE")
    op.execute(DELETE_ORPHANS)
    _triggers_revision().downgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _triggers_revision().upgrade()
