"""One unit of work in one transaction, run again when the database refuses it for a concurrent change.

PostgreSQL refuses a transaction, changing nothing, when running it would break isolation: under REPEATABLE READ
or SERIALIZABLE (an operator may make either the database's default) a list delete whose cascade would miss a
subscription committed after its snapshot fails with a serialization failure (SQLSTATE 40001), as does a
subscription whose list was deleted after the snapshot; at any level one of two deadlocked transactions is
cancelled (40P01). The same work on a fresh snapshot then sees the other's change and can succeed, or fail with
a clear error (the list is gone).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

R = TypeVar("R")

SERIALIZATION_FAILURE: Final = "40001"
DEADLOCK_DETECTED: Final = "40P01"
FOREIGN_KEY_VIOLATION: Final = "23503"
RETRY_STATES: Final = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})
# Runs of one unit of work; a conflict that outlasts them is answered with ConcurrentChange.
ATTEMPTS: Final = 4
# Upper bound of the first pause before a rerun (doubling each time): random, so two transactions that
# conflicted do not meet again at once.
BACKOFF_SECONDS: Final = 0.02


def _driver_errors(exc: BaseException) -> list[object]:
    orig = getattr(exc, "orig", None)
    return [source for source in (orig, getattr(orig, "__cause__", None)) if source is not None]


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL answered with (None for SQLite, which has none, or a non-database error)."""
    for source in _driver_errors(exc):
        state = getattr(source, "sqlstate", None) or getattr(source, "pgcode", None)
        if isinstance(state, str) and state:
            return state
    return None


def constraint_name(exc: BaseException) -> str | None:
    """The constraint a PostgreSQL integrity error names, if any."""
    for source in _driver_errors(exc):
        name = getattr(source, "constraint_name", None)
        if isinstance(name, str) and name:
            return name
    return None


def is_conflict(exc: BaseException) -> bool:
    """Whether the database refused the transaction for a concurrent change: rerunning it may succeed.

    On SQLite that is "database is locked": a writer waited out the busy timeout for another's write lock
    (writes begin IMMEDIATE, see `db.engine`), or a transaction begun without the lock wrote to the database
    after another writer committed; a rerun may get the lock, and reads afresh."""
    if not isinstance(exc, DBAPIError):
        return False
    return sqlstate(exc) in RETRY_STATES or "database is locked" in str(exc.orig)


class ConcurrentChange(DomainError):
    """The work kept conflicting with concurrent changes; nothing was changed and the caller may try again."""

    def __init__(self) -> None:
        super().__init__(
            FieldError(
                field=None,
                message="The data changed while this ran and nothing was saved; try again.",
                code=ErrorCode.CONCURRENT_CHANGE,
            )
        )


async def run_in_transaction(
    db: Database, work: Callable[[AsyncSession], Awaitable[R]], *, attempts: int = ATTEMPTS
) -> R:
    """`work` in one transaction, committed on success, run again on a fresh one when the database refused it
    for a concurrent change. `work` may therefore run more than once: it must only change the database
    through `session`, leaving any other effect (a queued job, a sent mail) to its caller."""
    for attempt in range(1, attempts + 1):
        try:
            async with db.transaction() as session:
                return await work(session)
        except DBAPIError as exc:
            if not is_conflict(exc):
                raise
            if attempt == attempts:
                raise ConcurrentChange() from exc
        await pause_before_rerun(attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def pause_before_rerun(attempt: int) -> None:
    """Wait a random while before rerunning work the database refused at `attempt` (from 1), so that two
    transactions that conflicted do not meet again at once; the bound doubles with each attempt."""
    await asyncio.sleep(random.uniform(0, BACKOFF_SECONDS * 2 ** (attempt - 1)))
