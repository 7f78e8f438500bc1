"""The database every test runs against: made fresh once per backend, emptied between tests, and the
statements it runs recorded for tests that count them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

from emailkit import migrate
from emailkit.db import rls
from emailkit.db.engine import Database
from emailkit.db.tables.base import Base
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID, DEFAULT_WORKSPACE_SLUG, Workspace
from emailkit.db.types import utcnow
from emailkit.domain.automation import versions
from emailkit.domain.webhooks_out.emit import subscriptions as webhook_listeners
from tests.support.environment import APP_ROLE, PG_APP_URL, PG_URL, pg_async_url


async def fresh_database(backend: str, tmp: Path) -> Database:
    """A migrated, empty database on `backend` ('sqlite' in `tmp`, or the PostgreSQL at PG_URL, wiped)."""
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp / 'test.db'}")
    else:
        assert PG_URL is not None and PG_APP_URL is not None
        await prepare_app_role(PG_URL)
        db = Database(pg_async_url(PG_APP_URL), pool_size=5)
    await migrate.upgrade(db)
    return db


async def prepare_app_role(admin_url: str) -> None:
    """As the administrator: the application role exists, may create in the database, and owns an empty public
    schema (so it owns every table the migrations create, FORCEd row-level security included)."""
    admin = Database(pg_async_url(admin_url), pool_size=1)
    try:
        async with admin.engine.begin() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE})
            if not exists:
                await conn.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
            database = await conn.scalar(text("SELECT current_database()"))
            await conn.execute(text(f'GRANT CREATE ON DATABASE "{database}" TO {APP_ROLE}'))
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("DROP SCHEMA IF EXISTS emailkit_events CASCADE"))
            await conn.execute(text(f"CREATE SCHEMA public AUTHORIZATION {APP_ROLE}"))
            # The superuser's step of the README (Workspaces): the indexes keep serving reads under the policies.
            for statement in rls.leakproof_statements():
                await conn.execute(text(statement))
    finally:
        await admin.dispose()


DEFAULT_WORKSPACE = {
    "id": DEFAULT_WORKSPACE_ID,
    "name": "Default",
    "slug": DEFAULT_WORKSPACE_SLUG,
    "status": "ACTIVE",
    "branding": {},
    "created_at": utcnow(),
    "updated_at": utcnow(),
}


async def truncate_all(db: Database) -> None:
    """Every table emptied (identities restarted on PostgreSQL), the schema kept, the default workspace back."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))
        await conn.execute(insert(Workspace).values(DEFAULT_WORKSPACE))
        if db.dialect == "postgresql":
            await conn.execute(text("SELECT setval(pg_get_serial_sequence('workspaces', 'id'), 1)"))
    # Version ids start again at 1: the process's parsed versions describe the flows just deleted.
    versions.forget_all()
    # The process's cache of webhook listeners describes the endpoints just deleted.
    webhook_listeners.invalidate()


@contextmanager
def recorded_statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements `db` runs while the block is open, in order."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
