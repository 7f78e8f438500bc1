"""Helpers for tests that interleave PostgreSQL transactions explicitly: which backend waits, and orphans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from emailkit.db.engine import Database
from emailkit.domain.transactions import sqlstate

OK = "ok"
SERIALIZATION_FAILURE = "serialization failure"
FOREIGN_KEY_VIOLATION = "foreign key violation"
_OUTCOMES = {"40001": SERIALIZATION_FAILURE, "23503": FOREIGN_KEY_VIOLATION}

ORPHANS = text(
    "SELECT count(*) FROM subscriptions AS s "
    "WHERE NOT EXISTS (SELECT 1 FROM lists AS l WHERE l.id = s.list_id) "
    "OR NOT EXISTS (SELECT 1 FROM subscribers AS p WHERE p.id = s.subscriber_id)"
)


async def orphans(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(ORPHANS)).scalar_one())


async def outcome(statement: Awaitable[Any]) -> str:
    """OK, or which of the refusals a foreign key may answer with; anything else is raised."""
    try:
        await statement
    except DBAPIError as exc:
        if (name := _OUTCOMES.get(sqlstate(exc) or "")) is None:
            raise
        return name
    return OK


async def backend_pid(conn: Any) -> int:
    """The connection's backend (which also begins its transaction and, above READ COMMITTED, its snapshot)."""
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def wait_until_blocked(
    db: Database, pid: int | None = None, *, waiting: Awaitable[Any] | None = None, backends: int = 1
) -> None:
    """Until backend `pid` (or, without one, that many `backends` of this database) waits on a lock. Polled: a
    lock wait has no event to subscribe to. `waiting` is the task expected to block: if it ends first, it failed
    to."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        + (" AND pid = :pid" if pid is not None else "")
    )
    async with db.engine.connect() as conn:
        for _ in range(4000):
            if (await conn.execute(text(query), {"pid": pid})).scalar_one() >= backends:
                return
            if isinstance(waiting, asyncio.Future) and waiting.done():
                waiting.result()
                raise AssertionError(
                    f"the statement expected to wait for a lock finished without waiting: {waiting.result()!r}"
                )
            await conn.rollback()
            await asyncio.sleep(0.005)
    raise AssertionError(f"no backend ({pid or 'any'}) waited on a lock")


@asynccontextmanager
async def default_isolation(db: Database, level: str) -> AsyncIterator[Database]:
    """A second Database on the same PostgreSQL database whose sessions default to isolation `level`, as
    `ALTER DATABASE ... SET default_transaction_isolation` would make them."""
    other = Database(db.url, pool_size=4)

    def set_default(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["server_settings"] = {"default_transaction_isolation": level}

    event.listen(other.engine.sync_engine, "do_connect", set_default)
    try:
        async with other.transaction() as s:
            assert (await s.execute(text("SHOW transaction_isolation"))).scalar_one() == level
        yield other
    finally:
        await other.dispose()
