"""Writers at once on SQLite wait for each other's write lock rather than being refused for each other's commits,
whatever the connection was used for before (a read session's AUTOCOMMIT resets the driver's setting)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from emailkit.db.engine import Database

WRITERS = 8


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}")
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        await session.execute(text("INSERT INTO counter VALUES (0)"))
    yield db
    await db.dispose()


async def bump(db: Database) -> None:
    """A transaction shaped like an import's: it writes a temporary table first, then reads the database and
    writes what it read back, changed."""
    async with db.engine.connect() as conn, conn.begin():
        await conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS scratch (n INTEGER)"))
        await conn.execute(text("INSERT INTO scratch VALUES (1)"))
        n = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
        await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})


@pytest.mark.parametrize("after_reads", [False, True], ids=["fresh", "after-read-sessions"])
async def test_writers_at_once_all_commit_and_lose_nothing(sqlite_db: Database, after_reads: bool) -> None:
    if after_reads:
        # Read sessions open at once, so that each of the connections the writers get served one.
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(WRITERS):
                session = await stack.enter_async_context(sqlite_db.read_session())
                await session.execute(text("SELECT n FROM counter"))
    await asyncio.gather(*(bump(sqlite_db) for _ in range(WRITERS)))
    async with sqlite_db.read_session() as session:
        assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == WRITERS
