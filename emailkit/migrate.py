"""Apply and inspect the Alembic history programmatically (used by the CLI, the app and tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from emailkit.db.engine import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class MigrationError(Exception):
    """A migration cannot run in this database as it stands; the message says what an operator must do."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(db: Database) -> str | None:
    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def pending(db: Database) -> bool:
    return await current_revision(db) != head_revision(db.url)


def _without_sqlite_foreign_keys(step: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """On SQLite, run `step` with foreign keys off, then check them (SQLite's own procedure for altering tables).

    Batch mode rebuilds a table by copying it and dropping the original; with foreign keys on, that drop deletes
    every row first and cascades the delete into the tables that reference it. The pragma only takes effect
    outside a transaction, so it is set before the migration's first statement and restored afterwards; a
    reference the migration broke fails the migration instead of being left behind.
    """

    def run(conn: Connection) -> None:
        if conn.dialect.name != "sqlite":
            step(conn)
            return
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        step(conn)
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise MigrationError(f"the migration left rows referencing missing rows: {broken[:5]}")

    return run


async def _forget_connections(db: Database) -> None:
    # The migration's SQLite connection still has foreign keys off (the pragma is ignored inside the
    # transaction that just ended): closed, not pooled, so every later connection gets them on at connect.
    if db.dialect == "sqlite":
        await db.engine.dispose()


async def upgrade(db: Database, revision: str = "head") -> None:
    def _upgrade(conn: Connection) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_without_sqlite_foreign_keys(_upgrade))
    finally:
        await _forget_connections(db)


async def downgrade(db: Database, revision: str) -> None:
    """Step the schema back to ``revision`` (``"base"`` drops every table the history created)."""

    def _downgrade(conn: Connection) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_without_sqlite_foreign_keys(_downgrade))
    finally:
        await _forget_connections(db)
