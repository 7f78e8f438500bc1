"""Alembic environment: works with a connection handed in by emailkit.migrate, or a URL for the CLI."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from emailkit.db.engine import create_engine
from emailkit.db.tables.base import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_with_url(config.get_main_option("sqlalchemy.url") or ""))
