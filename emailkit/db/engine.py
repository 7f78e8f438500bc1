"""Engine and session factory. Built by a composition root from a URL; no I/O at import time."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_

from emailkit.db.scope import NO_SCOPE_SETTING, current_scope
from emailkit.db.session_scope import ScopedSession
from emailkit.metrics import record as metrics

# The setting the row-level security policies read (migration 0010).
SCOPE_SETTING = "emailkit.workspace_id"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while the in-process worker writes; FKs are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_writes_begin_immediately(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A transaction on SQLite takes the database's write lock with its first write (BEGIN IMMEDIATE), waiting
    up to the busy timeout while another writer holds it.

    The driver begins a transaction itself, just before its first INSERT, UPDATE, DELETE or REPLACE (reads
    before that run on their own). Begun DEFERRED (its default), a transaction whose first write went to a
    temporary table (an import's staging) has no lock on the database, and reads it from a snapshot; once
    another writer commits, that snapshot is stale and its first write to the database is refused at once
    with "database is locked", whatever the busy timeout. Begun IMMEDIATE it holds the lock from its first
    write, so nothing commits under its reads and the other writers wait for it instead.

    Set at checkout: SQLAlchemy puts the driver's default back whenever a connection used with AUTOCOMMIT
    (a read session) returns to the pool."""
    if dbapi_conn.isolation_level != "IMMEDIATE":
        dbapi_conn.isolation_level = "IMMEDIATE"


async def begin_without_write_lock(conn: AsyncConnection) -> None:
    """Begin `conn`'s transaction now, DEFERRED (SQLite; call it inside an SQLAlchemy transaction, before any
    statement): for work that writes only this connection's temporary tables, which then takes no lock on the
    database and leaves other writers free meanwhile. Its first write to the database would be refused at once
    if another writer had committed since its first read: such writes belong in a transaction of their own."""
    await conn.exec_driver_sql("BEGIN DEFERRED")


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout: float = 30.0,
    statement_timeout: float | None = None,
    echo: bool = False,
) -> AsyncEngine:
    """`pool_timeout` bounds the wait for a connection (a free one from the pool, or a new one);
    `statement_timeout` (seconds, PostgreSQL only, None or 0 for none) bounds every statement."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, pool_timeout=pool_timeout)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine.pool, "checkout", _sqlite_writes_begin_immediately)
        _count_in_use(engine)
        return engine
    # A new connection starts outside any workspace: the policies show it nothing until a scope is set.
    server_settings = {SCOPE_SETTING: NO_SCOPE_SETTING}
    if statement_timeout:
        # Per connection, so every statement of every transaction is bounded without a SET per request.
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    connect_args: dict[str, Any] = {"timeout": pool_timeout, "server_settings": server_settings}
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
        poolclass=MeteredPool,
    )
    event.listen(engine.sync_engine.pool, "checkout", _discard_if_closed)
    event.listen(engine.sync_engine.pool, "checkout", _scope_connection)
    _count_in_use(engine)
    return engine


class MeteredPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool for asyncio, counting the checkouts that wait for a connection (none is free and the
    overflow is used up) in the ``waiting`` gauge."""

    # Its log lines under SQLAlchemy's name for the pool it extends, where logging settings expect them.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _do_get(self) -> ConnectionPoolEntry:
        if self.checkedin() == 0 and -1 < self._max_overflow <= self.overflow():
            metrics.pool("waiting", 1)
            try:
                return super()._do_get()
            finally:
                metrics.pool("waiting", -1)
        return super()._do_get()


def _count_in_use(engine: AsyncEngine) -> None:
    # Last among the checkout listeners: a checkout refused by an earlier one (a closed connection) is not
    # counted, and so never uncounted either.
    event.listen(engine.sync_engine.pool, "checkout", _checked_out)
    event.listen(engine.sync_engine.pool, "checkin", _checked_in)


def _checked_out(_dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    metrics.pool("in_use", 1)


def _checked_in(_dbapi_conn: Any, _record: Any) -> None:
    metrics.pool("in_use", -1)


def _scope_connection(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Give the connection the workspace scope of the code checking it out, for the row-level security
    policies: a session-level setting, sent only when it differs from what the connection already carries
    (so code that stays in one workspace pays no round trip after its first checkout).

    Sent on asyncpg's own connection, outside the transaction SQLAlchemy is about to begin: a setting made
    inside it would be undone by a rollback while this cache still believed it.
    """
    scope = current_scope()
    value = NO_SCOPE_SETTING if scope is None else scope.setting
    if record.info.get(SCOPE_SETTING, NO_SCOPE_SETTING) == value:
        return
    connection = dbapi_conn._connection
    await_(connection.execute(f"SELECT set_config('{SCOPE_SETTING}', $1, false)", value))
    # Cleared by SQLAlchemy when the connection is replaced, so a new connection is never assumed scoped.
    record.info[SCOPE_SETTING] = value


def _discard_if_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Instead of SQLAlchemy's pre-ping: a pooled connection the server has closed is replaced at checkout.

    The pre-ping is three round trips (BEGIN, an empty statement, ROLLBACK: measured ≈ 80 µs of client CPU,
    plus the server's) on every checkout, and every API request checks out at least one connection (its reads;
    its key's look-up too, when the key is not cached). What it catches is a connection the server closed
    while it sat in the pool (a restart, a fail-over, an idle time-out, a terminated backend): the server says
    so, or at least the socket is closed, and asyncpg marks the connection closed as soon as the event loop
    sees it, so asking asyncpg costs nothing. A connection in use when the server goes away fails its
    statement either way; SQLAlchemy then invalidates the whole pool, so the next checkouts connect afresh. (A
    peer that vanished silently, without closing the socket, would hang a ping just as it hangs a statement:
    no loss.)
    """
    connection = getattr(dbapi_conn, "_connection", None)
    if connection is not None and connection.is_closed():
        raise exc.DisconnectionError("the server closed this pooled connection")


class Failure(Enum):
    """Why a database call failed, when the cause is the database rather than the request."""

    UNAVAILABLE = "unavailable"  # down, restarting, unreachable, out of connections: try again later
    STATEMENT_TIMEOUT = "statement_timeout"  # cancelled after the statement timeout


# SQLSTATE classes: 08 connection exception, 57P admin/crash shutdown or cannot connect now, 53300 too
# many connections; 57014 is a statement cancelled (by statement_timeout).
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")
_TIMEOUT_SQLSTATE = "57014"


def failure_of(error: BaseException) -> Failure | None:
    """Classify an exception raised by database code (or by anything it caused), else None."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        seen += 1
        if isinstance(current, exc.TimeoutError):
            return Failure.UNAVAILABLE  # no pool connection within pool_timeout
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return Failure.UNAVAILABLE
        origin = current.orig if isinstance(current, exc.DBAPIError) else current
        state = getattr(origin, "sqlstate", None)
        if isinstance(state, str):
            if state == _TIMEOUT_SQLSTATE:
                return Failure.STATEMENT_TIMEOUT
            if state.startswith(_UNAVAILABLE_SQLSTATES):
                return Failure.UNAVAILABLE
        # asyncpg raises plain socket errors (refused, timed out) when it cannot connect at all; the same
        # errors from anything else (a mail server, a broker) say nothing about the database.
        if isinstance(current, OSError) and _raised_by_driver(current):
            return Failure.UNAVAILABLE
        if isinstance(current, exc.OperationalError) and "database is locked" in str(current.orig):
            return Failure.UNAVAILABLE
        current = current.__cause__ or current.__context__
    return None


_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite")


def _raised_by_driver(error: BaseException) -> bool:
    return any(
        str(frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES)
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


class Database:
    """Owns the engine; hands out sessions. One per process."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        statement_timeout: float | None = None,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
            echo=echo,
        )
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=ScopedSession
        )
        # Reads outside any transaction: no BEGIN and ROLLBACK around them, two round trips fewer per session
        # (a request's reads never needed one snapshot: each used to run in a session of its own).
        self.read_sessionmaker = async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            sync_session_class=ScopedSession,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: each statement runs on its own, with no transaction around it."""
        async with self.read_sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
