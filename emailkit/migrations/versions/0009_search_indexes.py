"""trigram indexes for substring search

Revision ID: 0009
Revises: 0008

`subscribers(search:)` and the segment filter's email/name `contains`, `startsWith` and `endsWith` compile to
`email LIKE '%…%'` and `name ILIKE '%…%'`, which a B-tree cannot serve: each was a scan of the whole table
(35 ms at 100,000 subscribers, EXPLAIN ANALYZE on PostgreSQL 15). GIN indexes over pg_trgm's trigrams serve
LIKE and ILIKE with any wildcard position (0.6 ms for "user123"); a term shorter than three characters has no
trigram, and the planner scans as before. SQLite gets always-false partial indexes of the same names, as in 0003.

pg_trgm is a trusted extension (PostgreSQL 13+): a role with CREATE on the database may install it. A role that
may not gets a MigrationError saying what to ask a superuser for, and nothing of this migration is applied.

The indexes are built inside the migration's transaction, not CONCURRENTLY: `emailkit migrate` applies the
whole history in one transaction (all or nothing) and CONCURRENTLY cannot run in one. A plain build locks out
writes to `subscribers` (reads go on) while it runs: 0.45 s for both indexes at 100,000 subscribers on a 2-core
machine, so seconds per million. For a table large enough for that to matter, create the indexes beforehand with
`CREATE INDEX CONCURRENTLY` and the same definitions (see README, "Search"); this migration then keeps them, and
rebuilds one only if a failed concurrent build left it invalid.

The downgrade drops the indexes and leaves the extension: other objects in the database may use it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from emailkit.migrate import MigrationError

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_NEVER = sa.text("0")
INDEXES = {"ix_subscribers_email_trgm": "email", "ix_subscribers_name_trgm": "name"}


def _extension_schema(bind: sa.Connection) -> str | None:
    return bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar_one_or_none()


def _install_pg_trgm(bind: sa.Connection) -> str:
    """The schema holding pg_trgm, installing it first if needed."""
    schema = _extension_schema(bind)
    if schema is not None:
        return schema
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        who = bind.execute(sa.text("SELECT current_user, current_database()")).one()
        raise MigrationError(
            f"Subscriber search needs the PostgreSQL extension pg_trgm, which is not installed in database "
            f"{who[1]!r}, and role {who[0]!r} cannot install it ({str(exc.orig).strip()}). Ask a superuser to "
            f"run `CREATE EXTENSION pg_trgm;` in that database (or to grant this role CREATE on it: pg_trgm is "
            f"a trusted extension), then run `emailkit migrate` again. pg_trgm ships with PostgreSQL (the "
            f"contrib package on some distributions)."
        ) from exc
    installed = _extension_schema(bind)
    assert installed is not None
    return installed


def _drop_if_invalid(bind: sa.Connection, name: str) -> None:
    # A CREATE INDEX CONCURRENTLY that failed leaves an invalid index that IF NOT EXISTS would keep.
    invalid = bind.execute(
        sa.text(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"name": name},
    ).scalar_one_or_none()
    if invalid:
        op.execute(sa.text(f"DROP INDEX {name}"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        for name, column in INDEXES.items():
            op.create_index(name, "subscribers", [column], unique=False, sqlite_where=SQLITE_NEVER)
        return
    # Qualified, so that an extension installed in another schema than ours is found all the same.
    opclass = bind.dialect.identifier_preparer.quote_identifier(_install_pg_trgm(bind)) + ".gin_trgm_ops"
    for name, column in INDEXES.items():
        _drop_if_invalid(bind, name)
        op.execute(
            sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON subscribers USING gin ({column} {opclass})")
        )


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="subscribers")
