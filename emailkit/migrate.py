"""Apply and inspect the Alembic history programmatically (used by the CLI, the app and tests)."""

from __future__ import annotations

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


async def upgrade(db: Database, revision: str = "head") -> None:
    def _upgrade(conn: Connection) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def downgrade(db: Database, revision: str) -> None:
    """Step the schema back to ``revision`` (``"base"`` drops every table the history created)."""

    def _downgrade(conn: Connection) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(_downgrade)
