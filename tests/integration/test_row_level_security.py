"""Row-level security on PostgreSQL, the second layer of workspace isolation: checked on the catalogue for every
tenant table, and by statements that bypass the application's own filters (raw SQL on a connection)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, no_scope, workspace_scope
from emailkit.db.tables.base import Base
from emailkit.domain.feedback import partitions
from tests.support.factories import make_workspace

pytestmark = pytest.mark.postgresql_only

SECURED = sorted({t.name for t in Base.metadata.sorted_tables if "workspace_id" in t.c} | {"workspaces"})


async def test_the_application_role_is_held_to_the_policies(db: Database) -> None:
    async with db.engine.connect() as conn:
        role = (
            await conn.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    assert tuple(role) == (False, False)


async def test_every_tenant_table_has_forced_row_level_security_and_the_policy(db: Database) -> None:
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                    "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'workspace_isolation') "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relname = ANY(:names)"
                ),
                {"names": SECURED},
            )
        ).all()
    assert sorted(r[0] for r in rows) == SECURED
    assert [r[0] for r in rows if tuple(r[1:]) != (True, True, 1)] == []


async def _raw_emails(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return sorted((await conn.execute(text("SELECT email FROM subscribers"))).scalars())


async def test_raw_statements_see_only_the_workspace_in_scope(db: Database) -> None:
    other = await make_workspace(db, "other")
    now = datetime.now(UTC)
    insert = text(
        "INSERT INTO subscribers (email, name, attributes, status, workspace_id, created_at, updated_at) "
        "VALUES (:email, '', '{}', 'ENABLED', :w, :now, :now)"
    )
    for workspace_id, email in ((1, "one@example.com"), (other, "two@example.com")):
        with workspace_scope(workspace_id):
            async with db.engine.begin() as conn:
                await conn.execute(insert, {"email": email, "w": workspace_id, "now": now})

    with workspace_scope(1):
        assert await _raw_emails(db) == ["one@example.com"]
    with workspace_scope(other):
        assert await _raw_emails(db) == ["two@example.com"]
    with all_workspaces():
        assert await _raw_emails(db) == ["one@example.com", "two@example.com"]
    with no_scope():
        assert await _raw_emails(db) == []


async def test_a_row_cannot_be_written_into_another_workspace(db: Database) -> None:
    other = await make_workspace(db, "other")
    now = datetime.now(UTC)
    with workspace_scope(1), pytest.raises(DBAPIError, match="row-level security"):
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (name, description, optin, visibility, tags, workspace_id, created_at, "
                    "updated_at) VALUES ('x', '', 'SINGLE', 'PRIVATE', '[]', :w, :now, :now)"
                ),
                {"w": other, "now": now},
            )
    with no_scope(), pytest.raises(DBAPIError, match="row-level security"):
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (name, description, optin, visibility, tags, workspace_id, created_at, "
                    "updated_at) VALUES ('x', '', 'SINGLE', 'PRIVATE', '[]', 1, :now, :now)"
                ),
                {"now": now},
            )


async def test_a_pooled_connection_takes_the_scope_of_each_checkout(db: Database) -> None:
    """The setting is cached per connection: a connection used for one workspace and then another (or for
    none) must follow, including after a transaction that rolled back."""
    other = await make_workspace(db, "other")
    with workspace_scope(other):
        with pytest.raises(RuntimeError):
            async with db.engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
                raise RuntimeError("roll back")
        async with db.engine.connect() as conn:
            assert (
                await conn.execute(text("SELECT current_setting('emailkit.workspace_id')"))
            ).scalar() == str(other)
    for _ in range(3):
        with workspace_scope(1):
            async with db.engine.connect() as conn:
                assert (
                    await conn.execute(text("SELECT current_setting('emailkit.workspace_id')"))
                ).scalar() == "1"
        with no_scope():
            async with db.engine.connect() as conn:
                assert (
                    await conn.execute(text("SELECT current_setting('emailkit.workspace_id')"))
                ).scalar() == ""


async def test_every_events_partition_has_the_policy_too_new_ones_included(db: Database) -> None:
    """A partition is a table of its own that a statement could name directly."""
    with all_workspaces():
        async with db.engine.begin() as conn:
            created = await partitions.ensure_event_partitions(
                conn, datetime(2031, 5, 1, tzinfo=UTC), ahead=0
            )
    assert created
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                    "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
                    "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events'"
                )
            )
        ).all()
    assert len(rows) >= 3
    assert [r[0] for r in rows if tuple(r[1:]) != (True, True, 1)] == []
