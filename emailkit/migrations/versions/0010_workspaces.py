"""workspaces: every tenant row belongs to one; row-level security on PostgreSQL

Revision ID: 0010
Revises: 0009

Creates ``workspaces`` with the default workspace (id 1, slug "default") and moves every existing row into it:
each tenant table gets ``workspace_id`` (NOT NULL, no default afterwards: an insert must name its workspace,
which the application takes from its scope). Root tables, the ones the API reaches by their own id, reference
``workspaces`` and get a (workspace_id, id) index for their listings. An address is unique per workspace now
(subscribers, suppressions). Existing API keys belong to the default workspace; a NULL workspace is an
instance (OWNER) key.

On PostgreSQL each tenant table gets ROW LEVEL SECURITY, FORCEd so that the table's owner is held to it too,
with one policy: a row is visible and writable when its workspace is the one in the connection's setting
``emailkit.workspace_id``, or when that setting is 0 (work that spans workspaces: the scheduler, webhook
correlation). Outside any scope the setting is empty and nothing is visible. A superuser or a role with
BYPASSRLS is not held to policies at all: the application must connect as a role that is neither (README,
"Workspaces").

Adding the column is instant on PostgreSQL 11+ (a default on ADD COLUMN is not written to every row); the
foreign keys of the root tables are validated by one scan each. On SQLite the tables are rebuilt (batch mode),
with foreign keys off for the duration (``emailkit.migrate``), so no rebuild cascades a delete.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from emailkit.db import rls
from emailkit.db.types import UTCDateTime, utcnow

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("ACTIVE", "ARCHIVED")
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ROOTS = ["subscribers", "lists", "segments", "imports", "suppressions", "templates", "campaigns"]
CHILDREN = [
    "subscriptions",
    "import_chunks",
    "import_errors",
    "campaign_lists",
    "campaign_batches",
    "deliveries",
    "campaign_segments",
    "events",
    "campaign_stats",
    "campaign_links",
    "campaign_firsts",
    "campaign_timeline",
]
# Tables whose ids SQLite must never reuse (sqlite_autoincrement): a batch rebuild must keep it.
AUTOINCREMENTED = {
    "subscribers",
    "lists",
    "segments",
    "imports",
    "import_errors",
    "templates",
    "campaigns",
    "campaign_batches",
    "deliveries",
    "api_keys",
    "suppressions",
}


def _batch(table: str) -> Any:
    kwargs = {"sqlite_autoincrement": True} if table in AUTOINCREMENTED else {}
    return op.batch_alter_table(table, table_kwargs=kwargs)


# Tables whose policy compares another column than workspace_id with the scope.
POLICY_COLUMN = {"workspaces": "id"}
SECURED = ["workspaces", "api_keys", *ROOTS, *CHILDREN]


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    op.create_table(
        "workspaces",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column(
            "status",
            sa.Enum("ACTIVE", "ARCHIVED", native_enum=False, length=24, create_constraint=False),
            nullable=False,
        ),
        sa.Column("public_url", sa.String(length=2048), nullable=True),
        sa.Column(
            "branding", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("quota_subscribers", BIGINT, nullable=True),
        sa.Column("quota_emails_per_day", BIGINT, nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("usage_day", sa.Date(), nullable=True),
        sa.Column("usage_emails", BIGINT, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
        sa.UniqueConstraint("slug", name=op.f("uq_workspaces_slug")),
        sqlite_autoincrement=True,
    )
    now = utcnow()
    workspaces = sa.table(
        "workspaces",
        *(sa.column(name) for name in ("id", "name", "slug", "status", "branding")),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    op.bulk_insert(
        workspaces,
        [
            {
                "id": 1,
                "name": "Default",
                "slug": "default",
                "status": "ACTIVE",
                "branding": "{}",
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    if pg:
        # The id was given explicitly: the identity must start after it.
        op.execute("SELECT setval(pg_get_serial_sequence('workspaces', 'id'), 1)")

    for table in ROOTS + CHILDREN:
        _add_workspace_column(table, root=table in ROOTS, pg=pg)

    with _batch("subscribers") as batch:
        batch.drop_constraint("uq_subscribers_email", type_="unique")
        batch.create_unique_constraint("uq_subscribers_workspace_id_email", ["workspace_id", "email"])
    with _batch("suppressions") as batch:
        batch.drop_constraint("uq_suppressions_email", type_="unique")
        batch.drop_constraint("uq_suppressions_email_hash", type_="unique")
        batch.create_unique_constraint(
            "uq_suppressions_workspace_id_email_hash", ["workspace_id", "email_hash"]
        )
        batch.create_unique_constraint("uq_suppressions_workspace_id_email", ["workspace_id", "email"])
    for table in ROOTS:
        op.create_index(f"ix_{table}_workspace_id_id", table, ["workspace_id", "id"])

    with _batch("api_keys") as batch:
        batch.add_column(sa.Column("workspace_id", BIGINT, nullable=True))
        batch.create_foreign_key(
            "fk_api_keys_workspace_id_workspaces", "workspaces", ["workspace_id"], ["id"], ondelete="RESTRICT"
        )
        batch.create_index("ix_api_keys_workspace_id", ["workspace_id"])
    op.execute("UPDATE api_keys SET workspace_id = 1")

    if pg:
        for table in SECURED:
            for statement in rls.secure_statements(table, POLICY_COLUMN.get(table, "workspace_id")):
                op.execute(statement)
        # The events partitions are tables of their own, which a query could name directly.
        for partition in _event_partitions(bind):
            for statement in rls.secure_statements(partition):
                op.execute(statement)
        # So that the search and attribute indexes still serve reads under the policies (see db/rls.py).
        if bind.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar():
            for statement in rls.leakproof_statements():
                op.execute(statement)


def _event_partitions(bind: sa.Connection) -> list[str]:
    found = bind.execute(
        sa.text(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
        )
    ).scalars()
    return list(found)


def _add_workspace_column(table: str, *, root: bool, pg: bool) -> None:
    if pg:
        # Instant: existing rows read the default without being rewritten; then new rows must name theirs.
        op.add_column(table, sa.Column("workspace_id", sa.BigInteger(), nullable=False, server_default="1"))
        op.alter_column(table, "workspace_id", server_default=None)
        if root:
            op.create_foreign_key(
                f"fk_{table}_workspace_id_workspaces",
                table,
                "workspaces",
                ["workspace_id"],
                ["id"],
                ondelete="RESTRICT",
            )
        return
    if table == "events":
        # Rebuilt by hand below: batch mode would lose the AUTOINCREMENT the composite key needs on SQLite.
        op.add_column(table, sa.Column("workspace_id", BIGINT, nullable=False, server_default="1"))
        return
    with _batch(table) as batch:
        batch.add_column(sa.Column("workspace_id", BIGINT, nullable=False, server_default="1"))
    with _batch(table) as batch:
        batch.alter_column("workspace_id", server_default=None, existing_type=BIGINT, existing_nullable=False)
        if root:
            batch.create_foreign_key(
                f"fk_{table}_workspace_id_workspaces",
                "workspaces",
                ["workspace_id"],
                ["id"],
                ondelete="RESTRICT",
            )


def downgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    if pg:
        for table in SECURED + _event_partitions(bind):
            op.execute(f"DROP POLICY IF EXISTS {rls.POLICY} ON {table}")
            op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    # Rows of other workspaces cannot go back into a single-tenant schema without colliding.
    op.execute("DELETE FROM api_keys WHERE workspace_id IS NULL OR workspace_id <> 1")
    with _batch("api_keys") as batch:
        batch.drop_index("ix_api_keys_workspace_id")
        batch.drop_constraint("fk_api_keys_workspace_id_workspaces", type_="foreignkey")
        batch.drop_column("workspace_id")
    for table in ROOTS:
        op.drop_index(f"ix_{table}_workspace_id_id", table_name=table)
    for table in ["campaigns", "imports", "segments", "subscribers", "suppressions", "lists", "templates"]:
        op.execute(f"DELETE FROM {table} WHERE workspace_id <> 1")  # noqa: S608 (table names are constants)
    with _batch("suppressions") as batch:
        batch.drop_constraint("uq_suppressions_workspace_id_email", type_="unique")
        batch.drop_constraint("uq_suppressions_workspace_id_email_hash", type_="unique")
        batch.create_unique_constraint("uq_suppressions_email_hash", ["email_hash"])
        batch.create_unique_constraint("uq_suppressions_email", ["email"])
    with _batch("subscribers") as batch:
        batch.drop_constraint("uq_subscribers_workspace_id_email", type_="unique")
        batch.create_unique_constraint("uq_subscribers_email", ["email"])
    for table in CHILDREN + ROOTS:
        if table == "events" and not pg:
            op.drop_column(table, "workspace_id")
            continue
        with _batch(table) as batch:
            if table in ROOTS:
                batch.drop_constraint(f"fk_{table}_workspace_id_workspaces", type_="foreignkey")
            batch.drop_column("workspace_id")
    op.drop_table("workspaces")
