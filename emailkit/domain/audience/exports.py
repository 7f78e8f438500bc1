"""CSV export of subscribers (all, a list, a segment), streamed in keyset pages at constant memory.

Columns: email, name, status, created_at, then one per attribute key path (nested keys joined with dots),
discovered in a first pass over the same selection. Cells that a spreadsheet would run as a formula are
prefixed with a quote (CSV injection).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ARRAY, ColumnElement, Select, Text, and_, case, exists, func, literal, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of
from emailkit.db.engine import Database
from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.audience import Subscriber, Subscription, SubscriptionStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience.lists import require_lists
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.store import get_segment
from emailkit.domain.audience.segments.validate import parse_filter

FIXED_COLUMNS: Final = ("email", "name", "status", "created_at")
PAGE_SIZE: Final = 5000
# Spreadsheet programs evaluate cells starting with these (OWASP "CSV injection").
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
# Joins the parts of a key path while keys are collected, where a dot may be part of a key.
_SEP: Final = "\x1f"


@dataclass(frozen=True)
class Selection:
    """Which subscribers to export: all of them, or those on a list and/or matching a segment."""

    list_id: int | None = None
    segment_id: int | None = None
    subscription_status: SubscriptionStatus | None = None


async def selection_clause(session: AsyncSession, selection: Selection) -> ColumnElement[bool]:
    """The WHERE clause over subscribers, of the workspace in scope; unknown lists and segments (also another
    workspace's) raise NotFound.

    The pages are read with Core statements on a connection, which the session's workspace filter does not
    reach: the clause names the workspace itself."""
    parts: list[ColumnElement[bool]] = [Subscriber.workspace_id == current_workspace_id()]
    if selection.list_id is not None:
        await require_lists(session, [selection.list_id])
        conditions = [
            Subscription.subscriber_id == Subscriber.id,
            Subscription.list_id == selection.list_id,
        ]
        if selection.subscription_status is not None:
            conditions.append(Subscription.status == selection.subscription_status)
        parts.append(exists().where(*conditions))
    if selection.segment_id is not None:
        segment = await get_segment(session, selection.segment_id)
        spec = parse_filter(segment.filter)
        parts.append(compile_filter(spec, dialect_of(session), now=utcnow()))
    return and_(*parts)


def flatten(attributes: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key path, value) for every leaf; lists and empty objects' siblings are leaves as they are."""
    for key, value in attributes.items():
        path = f"{prefix}{_SEP}{key}" if prefix else key
        if isinstance(value, dict):
            yield from flatten(value, path)
        else:
            yield path, value


def cell(value: Any) -> str:
    """A value as CSV text, made inert for spreadsheets."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = json.dumps(value)
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        # The layout PostgreSQL prints JSON in, so both backends export lists alike.
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def column_name(path: str) -> str:
    """The header of an attribute column; one that would clash with a fixed column is prefixed."""
    name = path.replace(_SEP, ".")
    return f"attributes.{name}" if name in FIXED_COLUMNS else name


async def attribute_paths(db: Database, where: ColumnElement[bool]) -> list[str]:
    """Every attribute key path used in the selection, sorted (first pass of an export)."""
    if db.dialect == "postgresql":
        async with db.session() as session:
            return sorted(await _postgresql_paths(session, where))
    paths: set[str] = set()
    after = 0
    while True:
        async with db.session() as session:
            rows = (
                await session.execute(
                    select(Subscriber.id, Subscriber.attributes)
                    .where(where, Subscriber.id > after)
                    .order_by(Subscriber.id)
                    .limit(PAGE_SIZE)
                )
            ).all()
        if not rows:
            break
        for _, attributes in rows:
            paths.update(path for path, _ in flatten(attributes or {}))
        after = rows[-1][0]
    return sorted(paths)


async def _postgresql_paths(session: AsyncSession, where: ColumnElement[bool]) -> set[str]:
    """Key paths found by the database, one level per query: only the documents' keys come back.

    The first query lists the top-level keys and whether each holds scalars, objects or both; only keys
    holding objects are looked into, so flat attributes (the usual case) cost a single pass."""
    found: set[str] = set()
    pending: list[tuple[str, ...]] = [()]
    while pending:
        prefix = pending.pop()
        document: Any = Subscriber.attributes
        if prefix:
            node = Subscriber.attributes.op("#>")(literal(list(prefix), ARRAY(Text)))
            document = case((func.jsonb_typeof(node) == "object", node), else_=literal({}, JSONB()))
        each = func.jsonb_each(document).table_valued("key", "value").render_derived("each")
        kind = func.jsonb_typeof(each.c.value)
        stmt = (
            select(each.c.key, func.bool_or(kind == "object"), func.bool_or(kind != "object"))
            .select_from(Subscriber)
            .join(each, true())
            .where(where)
            .group_by(each.c.key)
        )
        for key, holds_objects, holds_values in (await session.execute(stmt)).all():
            path = (*prefix, key)
            if holds_values:
                found.add(_SEP.join(path))
            if holds_objects:
                pending.append(path)
    return found


def _pg_attribute_text(path: str) -> ColumnElement[Any]:
    """The value at a key path as text, computed by PostgreSQL (no JSON decoding in Python): strings
    unquoted, numbers and booleans as JSON writes them, lists as JSON; objects are not leaves, so empty."""
    keys = literal(path.split(_SEP), ARRAY(Text))
    node = Subscriber.attributes.op("#>")(keys)
    return case((func.jsonb_typeof(node) == "object", None), else_=Subscriber.attributes.op("#>>")(keys))


async def _page(db: Database, stmt: Select[Any], after: int) -> list[Any]:
    async with db.engine.connect() as conn:
        page_stmt = stmt.where(Subscriber.id > after).order_by(Subscriber.id).limit(PAGE_SIZE)
        return list((await conn.execute(page_stmt)).all())


async def _pages(db: Database, columns: list[Any], where: ColumnElement[bool]) -> AsyncIterator[list[Any]]:
    """The selection in id order, a page at a time, each page read on its own short connection; the next
    page is already being fetched while the caller formats this one."""
    stmt = select(Subscriber.id, *columns).where(where)
    rows = await _page(db, stmt, 0)
    while rows:
        upcoming = asyncio.ensure_future(_page(db, stmt, rows[-1][0]))
        try:
            yield rows
        except BaseException:
            upcoming.cancel()
            raise
        rows = await upcoming


_FIXED = (Subscriber.email, Subscriber.name, Subscriber.status, Subscriber.created_at)


def _text(value: str | None) -> str:
    """A text cell, inert for spreadsheets (see FORMULA_STARTS)."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


async def csv_lines(db: Database, export: Export) -> AsyncIterator[list[list[str]]]:
    """The export's data rows as lists of cells, a page at a time."""
    paths = export.paths
    if db.dialect == "postgresql":
        # PostgreSQL hands over every attribute as text already: per row only the formula check is left.
        async for rows in _pages(db, [*_FIXED, *map(_pg_attribute_text, paths)], export.where):
            yield [
                [_text(row[1]), _text(row[2]), row[3].value, row[4].isoformat(), *map(_text, row[5:])]
                for row in rows
            ]
        return
    index = {path: i for i, path in enumerate(paths, start=len(FIXED_COLUMNS))}
    width = len(FIXED_COLUMNS) + len(paths)
    async for rows in _pages(db, [*_FIXED, Subscriber.attributes], export.where):
        page = []
        for row in rows:
            line = [_text(row[1]), _text(row[2]), row[3].value, row[4].isoformat(), *([""] * (width - 4))]
            for path, value in flatten(row[5] or {}):
                position = index.get(path)
                # A key added after the first pass has no column; it is in the next export.
                if position is not None:
                    line[position] = cell(value)
            page.append(line)
        yield page


@dataclass(frozen=True)
class Export:
    where: ColumnElement[bool]
    paths: list[str]

    @property
    def header(self) -> list[str]:
        return [*FIXED_COLUMNS, *(cell(column_name(p)) for p in self.paths)]


async def prepare_export(db: Database, selection: Selection) -> Export:
    """Resolve the selection and discover its attribute columns; unknown lists or segments raise NotFound
    (before anything is streamed)."""
    async with db.session() as session:
        where = await selection_clause(session, selection)
    return Export(where=where, paths=await attribute_paths(db, where))


async def csv_chunks(db: Database, export: Export) -> AsyncIterator[str]:
    """The export as text: the header, then one chunk per page of subscribers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(export.header)
    yield take()
    async for lines in csv_lines(db, export):
        writer.writerows(lines)
        yield take()
