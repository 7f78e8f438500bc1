"""Local time: lists' default timezones, campaigns sent in each recipient's timezone

Revision ID: 0014
Revises: 0013

A list may name the timezone of subscribers without a valid ``timezone`` attribute (``lists.default_timezone``).
A campaign scheduled in local time keeps the wall-clock time it is sent at (``campaigns.local_send_at``, naive)
and, once started, when its last timezone is due (``campaigns.local_send_until``); each of its deliveries is
held until its recipient's clock shows that time (``deliveries.not_before``).

Every new column is nullable with no default: instant on both databases, and no policy changes (the tables
already carry their workspace policies).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailkit.db.types import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = UTCDateTime(timezone=True)


def _new_columns() -> list[tuple[str, sa.Column[object]]]:
    # Made afresh per run: a Column belongs to the table it was added to.
    return [
        ("lists", sa.Column("default_timezone", sa.String(length=64), nullable=True)),
        ("campaigns", sa.Column("local_send_at", sa.DateTime(), nullable=True)),
        ("campaigns", sa.Column("local_send_until", TS, nullable=True)),
        ("deliveries", sa.Column("not_before", TS, nullable=True)),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (a batch-mode copy of `deliveries` on SQLite would be slow for
    # nothing: the columns are nullable).
    for table, column in _new_columns():
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(_new_columns()):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column.name}")
