"""Substring search on email and name: the same answers on both backends, and on PostgreSQL the statements
the domain emits are planned on the trigram indexes of migration 0009 (SQLite keeps its scan)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.pagination import Page

N = 3000


@pytest.fixture
async def people(db: Database) -> Database:
    """N subscribers user1..userN@example.com named "User 1".."User N", and one whose name holds "user123"."""
    async with db.transaction() as session:
        await session.execute(
            insert(Subscriber),
            [
                {"email": f"user{i}@example.com", "name": f"User {i}", "attributes": {}}
                for i in range(1, N + 1)
            ]
            + [{"email": "ada@example.org", "name": "Ada SUPERUSER1234 Lovelace", "attributes": {}}],
        )
    if db.dialect == "postgresql":
        # As autovacuum would: statistics, and the GIN pending list (rows inserted since the build) merged.
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE subscribers"))
    return db


Fetch = Callable[[AsyncSession], Awaitable[Page[Subscriber]]]


def search(term: str) -> Fetch:
    return lambda s: subscribers.find_subscribers(s, first=50, after=None, search=term)


def matching(condition: dict[str, Any]) -> Fetch:
    return lambda s: segments.find_subscribers(s, condition, first=50, after=None)


@contextmanager
def captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def page_and_count(db: Database, fetch: Fetch) -> tuple[list[str], int, list[tuple[str, Any]]]:
    """The first page's emails, the total, and the statements that produced them."""
    with captured(db) as statements:
        async with db.session() as session:
            page = await fetch(session)
            total = await page.total(session)
    return [p.email for p in page.items], total.value, statements


async def plans(db: Database, statements: list[tuple[str, Any]]) -> list[str]:
    """EXPLAIN of each statement exactly as sent, with its parameters, with only bitmap scans left to the
    planner: a bitmap scan on a trigram index shows that the index serves the expression as written (on a few
    thousand rows walking the primary key is as cheap; at 100,000 the planner picks the index unprompted)."""
    out = []
    async with db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_indexscan = off"))
        for sql, parameters in statements:
            rows = (await conn.exec_driver_sql("EXPLAIN " + sql, parameters)).scalars().all()
            out.append("\n".join(rows))
    return out


async def test_search_matches_email_and_name_substrings(people: Database) -> None:
    emails, total, _ = await page_and_count(people, search("USER123"))
    # user123, user1230..user1239, and Ada, whose name holds it; oldest first.
    assert emails == ["user123@example.com"] + [f"user{1230 + i}@example.com" for i in range(10)] + [
        "ada@example.org"
    ]
    assert total == 12
    emails, total, _ = await page_and_count(people, search("er 299"))
    assert emails == ["user299@example.com"] + [f"user{2990 + i}@example.com" for i in range(10)]
    assert total == 11
    # A term shorter than a trigram still matches (by a scan).
    _, total, _ = await page_and_count(people, search("9"))
    assert total == sum("9" in str(i) for i in range(1, N + 1))


@pytest.mark.parametrize(
    ("fetch", "expected"),
    [
        (search("user123"), 12),
        (matching({"email": {"contains": "USER2345"}}), 1),
        (matching({"email": {"startsWith": "user234"}}), 11),
        (matching({"email": {"endsWith": "345@example.com"}}), 3),
        (matching({"name": {"contains": "superuser"}}), 1),
    ],
    ids=["search", "email contains", "email startsWith", "email endsWith", "name contains"],
)
async def test_substring_reads_use_the_trigram_indexes(people: Database, fetch: Fetch, expected: int) -> None:
    _, total, statements = await page_and_count(people, fetch)
    assert total == expected
    assert len(statements) == 2  # the page and its count
    if people.dialect != "postgresql":
        return
    for plan in await plans(people, statements):
        assert "_trgm" in plan, plan


@pytest.mark.postgresql_only
async def test_both_indexes_serve_one_search(people: Database) -> None:
    _, _, statements = await page_and_count(people, search("user123"))
    count_plan = (await plans(people, statements))[1]
    assert "ix_subscribers_email_trgm" in count_plan and "ix_subscribers_name_trgm" in count_plan, count_plan
