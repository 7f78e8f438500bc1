"""The database every test runs against: made fresh once per backend, emptied between tests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from emailkit import migrate
from emailkit.domain.db import Database
from emailkit.domain.models import Base
from tests.support.environment import PG_URL, pg_async_url


async def fresh_database(backend: str, tmp: Path) -> Database:
    """A migrated, empty database on `backend` ('sqlite' in `tmp`, or the PostgreSQL at PG_URL, wiped)."""
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp / 'test.db'}")
    else:
        assert PG_URL is not None
        db = Database(pg_async_url(PG_URL), pool_size=5)
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(db)
    return db


async def truncate_all(db: Database) -> None:
    """Every table emptied (identities restarted on PostgreSQL), the schema kept."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))
