"""Keyset pages of many parents' children in one statement (their counts: emailkit.domain.counting).

A nested connection (a campaign's deliveries, a subscriber's events) is read for a whole page of parents at
once. On PostgreSQL each parent's page is a LATERAL subquery with its own ORDER BY ... LIMIT, so the index on
(parent, key) is walked only as far as the page. SQLite has no LATERAL; there ROW_NUMBER() OVER (PARTITION BY
parent) numbers the children of the given parents and the first N of each are kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Select, column, func, select, true, values
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from emailkit.db.dialect import dialect_of

T = TypeVar("T")


@dataclass
class ChildPage(Generic[T]):
    items: list[T]
    keys: list[int]
    has_next: bool


async def child_pages(
    session: AsyncSession,
    stmt: Select[Any],
    parent: InstrumentedAttribute[Any],
    key: InstrumentedAttribute[int],
    parent_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    descending: bool = False,
) -> dict[int, ChildPage[Any]]:
    """The first ``first`` children of each parent after key ``after``; ``stmt`` selects one ORM entity.

    Every parent in ``parent_ids`` gets a page, empty if it has no children.
    """
    pages: dict[int, ChildPage[Any]] = {p: ChildPage([], [], False) for p in parent_ids}
    if not parent_ids:
        return pages
    entity = stmt.column_descriptions[0]["entity"]
    if after is not None:
        stmt = stmt.where(key < after if descending else key > after)
    order = key.desc() if descending else key.asc()
    if dialect_of(session) == "postgresql":
        wanted = values(column("parent_id", BigInteger), name="wanted").data([(p,) for p in parent_ids])
        per_parent = (
            stmt.where(parent == wanted.c.parent_id).order_by(order).limit(first + 1).subquery().lateral()
        )
        child = aliased(entity, per_parent)
        query = select(child).select_from(wanted).join(per_parent, true())
    else:
        position = func.row_number().over(partition_by=parent, order_by=order).label("position")
        numbered = stmt.where(parent.in_(parent_ids)).add_columns(position).subquery()
        child = aliased(entity, numbered)
        query = select(child).where(numbered.c.position <= first + 1)
    rows: dict[int, list[Any]] = defaultdict(list)
    for row in (await session.execute(query)).scalars():
        rows[getattr(row, parent.key)].append(row)
    for parent_id, children in rows.items():
        children.sort(key=lambda r: getattr(r, key.key), reverse=descending)
        page = children[:first]
        pages[parent_id] = ChildPage(
            page, [getattr(r, key.key) for r in page], has_next=len(children) > first
        )
    return pages
