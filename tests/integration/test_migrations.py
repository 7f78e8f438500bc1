"""The Alembic history and the ORM models describe the same schema, on SQLite and on PostgreSQL.

PostgreSQL runs use a scratch database created next to EMAILKIT_TEST_DATABASE_URL, so dropping and
recreating tables here never disturbs the session-wide database the other suites share.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.base import Base
from tests.support.environment import BACKENDS, PG_URL


def _async_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def create_scratch_database(base_url: str, *, owner: str | None = None) -> str:
    """Create an empty database on the server of ``base_url``; returns its asyncpg URL (as `owner`, who owns
    the database and its public schema, when given: a role held to row-level security, as the app must be)."""
    base = make_url(_async_url(base_url))
    name = f"{base.database}_scratch_{uuid.uuid4().hex[:10]}"
    engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"' + (f" OWNER {owner}" if owner else "")))
    finally:
        await engine.dispose()
    url = base.set(database=name)
    if owner is None:
        return url.render_as_string(hide_password=False)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f"ALTER SCHEMA public OWNER TO {owner}"))
    finally:
        await engine.dispose()
    return url.set(username=owner, password=None).render_as_string(hide_password=False)


async def drop_scratch_database(base_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(_async_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}")
        yield db
        await db.dispose()
        return
    assert PG_URL is not None
    url = await create_scratch_database(PG_URL)
    db = Database(url, pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()
        await drop_scratch_database(PG_URL, url)


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn)
    return list(compare_metadata(context, Base.metadata))


async def differences(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_differences)


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


def test_one_linear_history() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite+aiosqlite://"))
    assert len(scripts.get_heads()) == 1
    assert len(scripts.get_bases()) == 1


async def test_models_and_migrations_agree(empty_db: Database) -> None:
    assert await migrate.pending(empty_db)
    await migrate.upgrade(empty_db)
    assert not await migrate.pending(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision(empty_db.url)
    diff = await differences(empty_db)
    assert diff == [], (
        "models and migrations differ; generate a migration with "
        "`alembic revision --autogenerate`:\n" + "\n".join(map(repr, diff))
    )


async def test_upgrade_twice_is_a_no_op(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    await migrate.upgrade(empty_db)
    assert not await migrate.pending(empty_db)


async def test_downgrade_to_base_and_upgrade_again(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    model_tables = set(Base.metadata.tables)
    assert model_tables <= await table_names(empty_db)

    await migrate.downgrade(empty_db, "base")
    assert await table_names(empty_db) & model_tables == set()
    assert await migrate.current_revision(empty_db) is None
    assert await migrate.pending(empty_db)

    await migrate.upgrade(empty_db)
    assert model_tables <= await table_names(empty_db)
    assert await differences(empty_db) == []
