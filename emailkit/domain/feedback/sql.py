"""Small dialect helpers for the bulk statements of the feedback loop."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def upsert(session: AsyncSession) -> Any:
    """The dialect's ``insert`` that knows ON CONFLICT."""
    return postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert


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
