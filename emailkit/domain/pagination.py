"""Keyset pagination: pages are cut on the primary key, never with OFFSET."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from emailkit.domain.counting import DEFAULT_EXACT_LIMIT, Count, count_matches

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    keys: list[int]
    has_next: bool
    # The filtered statement without ordering/limits, so totalCount is computed only when asked for. It selects
    # one entity's rows with neither DISTINCT nor GROUP BY (the count replaces its columns).
    count_stmt: Select[Any]

    async def total(self, session: AsyncSession, exact_limit: int = DEFAULT_EXACT_LIMIT) -> Count:
        """All matches, exact up to ``exact_limit`` (see emailkit.domain.counting)."""
        return await count_matches(session, self.count_stmt, exact_limit)


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Any],
    key: InstrumentedAttribute[int],
    *,
    first: int,
    after: int | None,
    descending: bool = False,
) -> Page[Any]:
    """Fetch ``first`` rows after key ``after``; ``stmt`` selects ORM entities filtered as wanted."""
    page_stmt = stmt
    if after is not None:
        page_stmt = page_stmt.where(key < after if descending else key > after)
    page_stmt = page_stmt.order_by(key.desc() if descending else key.asc()).limit(first + 1)
    rows = list((await session.execute(page_stmt)).scalars().all())
    has_next = len(rows) > first
    rows = rows[:first]
    return Page(items=rows, keys=[r.id for r in rows], has_next=has_next, count_stmt=stmt)
