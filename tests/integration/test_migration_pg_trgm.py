"""Migration 0009 on PostgreSQL: the trigram indexes up and down, a role that may not install pg_trgm, and
indexes an operator built beforehand with CREATE INDEX CONCURRENTLY. Each test runs in a scratch database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from emailkit import migrate
from emailkit.db.engine import Database
from tests.integration.test_cli import _base_env, assert_one_line_error, emailkit
from tests.integration.test_migrations import create_scratch_database, drop_scratch_database
from tests.support.environment import PG_URL, TEST_SECRET

TRGM = {"ix_subscribers_email_trgm": "email", "ix_subscribers_name_trgm": "name"}


async def admin(sql: str, url: str | None = None) -> None:
    """Run statements as the test server's superuser (on the scratch database when given)."""
    assert PG_URL is not None
    engine = create_async_engine(
        url or make_url(PG_URL).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            for statement in sql.split(";"):
                if statement.strip():
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def scratch() -> AsyncIterator[str]:
    assert PG_URL is not None
    url = await create_scratch_database(PG_URL)
    try:
        yield url
    finally:
        await drop_scratch_database(PG_URL, url)


@pytest.fixture
async def role() -> AsyncIterator[str]:
    """A login role of its own, dropped after the scratch database (fixtures unwind in reverse)."""
    name = f"emailkit_test_{uuid.uuid4().hex[:10]}"
    await admin(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        await admin(f'DROP ROLE IF EXISTS "{name}"')


async def trigram_indexes(db: Database) -> dict[str, str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' "
                "ELSE ' INVALID' END FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'subscribers'::regclass AND c.relname LIKE '%trgm'"
            )
        )
        return {name: definition for name, definition in rows}


async def test_up_and_down(scratch: str) -> None:
    db = Database(scratch, pool_size=2)
    try:
        await migrate.upgrade(db)
        indexes = await trigram_indexes(db)
        assert set(indexes) == set(TRGM)
        for name, column in TRGM.items():
            assert f"USING gin ({column} gin_trgm_ops)" in indexes[name]
        await migrate.downgrade(db, "0008")
        assert await trigram_indexes(db) == {}
        await migrate.upgrade(db)
        assert set(await trigram_indexes(db)) == set(TRGM)
    finally:
        await db.dispose()


async def test_a_role_that_cannot_install_pg_trgm_gets_a_clear_error(
    role: str, scratch: str, tmp_path: Path
) -> None:
    setup = Database(scratch, pool_size=1)
    await migrate.upgrade(setup, "0008")
    await setup.dispose()
    # The application's role owns the tables and may create in their schema but, like PUBLIC by default, has
    # no CREATE on the database.
    await admin(
        f'GRANT CONNECT ON DATABASE "{make_url(scratch).database}" TO "{role}";'
        f'GRANT CREATE ON SCHEMA public TO "{role}";'
        f'ALTER TABLE subscribers OWNER TO "{role}"; ALTER TABLE alembic_version OWNER TO "{role}"',
        scratch,
    )
    as_role = make_url(scratch).set(username=role).render_as_string(hide_password=False)
    db = Database(as_role, pool_size=1)
    try:
        cli = {**_base_env(tmp_path), "EMAILKIT_DATABASE_URL": as_role, "EMAILKIT_SECRET_KEY": TEST_SECRET}
        refused = await asyncio.to_thread(emailkit, tmp_path, cli, "migrate")
        assert_one_line_error(refused, "pg_trgm", "CREATE EXTENSION pg_trgm", "emailkit migrate")
        assert refused.returncode == 2

        with pytest.raises(migrate.MigrationError) as err:
            await migrate.upgrade(db)
        message = str(err.value)
        assert "pg_trgm" in message and role in message and "CREATE EXTENSION pg_trgm" in message
        assert "permission denied" in message
        # Nothing of the migration was applied.
        assert await migrate.current_revision(db) == "0008"
        assert await trigram_indexes(db) == {}

        # pg_trgm is trusted: CREATE on the database is all a role needs to install it.
        await admin(f'GRANT CREATE ON DATABASE "{make_url(scratch).database}" TO "{role}"', scratch)
        await migrate.upgrade(db, "0009")
        assert await migrate.current_revision(db) == "0009"
        assert set(await trigram_indexes(db)) == set(TRGM)
    finally:
        await db.dispose()
        await admin(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER; DROP OWNED BY "{role}"', scratch)


async def test_indexes_built_concurrently_beforehand_are_kept_and_an_invalid_one_rebuilt(
    scratch: str,
) -> None:
    db = Database(scratch, pool_size=2)
    try:
        await migrate.upgrade(db, "0008")
        await admin(
            "CREATE EXTENSION pg_trgm;"
            "CREATE INDEX CONCURRENTLY ix_subscribers_email_trgm ON subscribers USING gin (email gin_trgm_ops);"
            "CREATE INDEX CONCURRENTLY ix_subscribers_name_trgm ON subscribers USING gin (name gin_trgm_ops);"
            # What a concurrent build that failed half-way leaves behind (forced here through the catalog).
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_subscribers_name_trgm'::regclass",
            scratch,
        )
        async with db.engine.connect() as conn:
            kept = (
                await conn.execute(text("SELECT 'ix_subscribers_email_trgm'::regclass::oid"))
            ).scalar_one()
        assert (await trigram_indexes(db))["ix_subscribers_name_trgm"].endswith("INVALID")

        await migrate.upgrade(db)
        indexes = await trigram_indexes(db)
        assert set(indexes) == set(TRGM) and not any(d.endswith("INVALID") for d in indexes.values())
        async with db.engine.connect() as conn:
            now = (await conn.execute(text("SELECT 'ix_subscribers_email_trgm'::regclass::oid"))).scalar_one()
        assert now == kept
    finally:
        await db.dispose()
