"""Small dialect helpers: which database a session or connection talks to, its ``insert`` that knows
ON CONFLICT, and the PostgreSQL forms of the hot bulk statements."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, any_, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import TypeEngine


def dialect_of(bind: AsyncSession | AsyncConnection) -> str:
    """The dialect's name ("postgresql" or "sqlite") under a session or a connection."""
    if isinstance(bind, AsyncConnection):
        return bind.dialect.name
    return bind.get_bind().dialect.name


def upsert(bind: AsyncSession | AsyncConnection) -> Any:
    """The dialect's ``insert`` that knows ON CONFLICT."""
    return postgresql.insert if dialect_of(bind) == "postgresql" else sqlite.insert


def one_of(
    session: AsyncSession,
    column: SQLColumnExpression[Any],
    values: Collection[Any],
    item_type: TypeEngine[Any],
) -> ColumnElement[bool]:
    """``column IN values``. On PostgreSQL one array parameter (``= ANY($1)``), so the prepared statement
    is the same for every batch size instead of one per size."""
    if dialect_of(session) == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(item_type)))
    return column.in_(list(values))


async def pg_driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction.

    The hot statements go straight to the driver: binary COPY and array parameters without SQLAlchemy's
    per-parameter processing cost a fraction of the same statements through the ORM session.
    """
    conn = await session.connection()
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy opens the transaction lazily, with its first statement.
        await session.execute(text("SELECT 1"))
    return driver
