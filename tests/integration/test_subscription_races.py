"""A subscription never outlives its list or subscriber, at any isolation level and in any interleaving.

Two connections race a subscription insert against the delete of the list or subscriber it names, in the four
orders that matter, under READ COMMITTED, REPEATABLE READ and SERIALIZABLE. The outcome is what PostgreSQL's
declared foreign keys give: under READ COMMITTED the delete cascades or the insert fails the key; above it
whichever side would miss the other's change fails with a serialization failure. Never an orphan.

Then emailkit's own domain functions race each other on connections whose default isolation is REPEATABLE
READ (as an operator may configure the database) and READ COMMITTED: a refusal is rerun or becomes a clear
DomainError, never an internal error, and never an orphan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import ImportStatus, MailingList, Subscriber, Subscription
from emailkit.domain.audience import lists, subscribers
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.domain.audience.imports.service import ImportRequest
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.transactions import ConcurrentChange, run_in_transaction
from tests.support.races import (
    FOREIGN_KEY_VIOLATION,
    OK,
    SERIALIZATION_FAILURE,
    backend_pid,
    default_isolation,
    orphans,
    outcome,
    wait_until_blocked,
)

pytestmark = pytest.mark.postgresql_only

R = TypeVar("R")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

# Who goes first, and whether the second waits for the first's lock or starts its snapshot before the first
# commits without ever waiting.
INSERT_THEN_DELETE_WAITS = "insert, then the delete waits for it"
DELETE_THEN_INSERT_WAITS = "delete, then the insert waits for it"
INSERT_COMMITS_IN_DELETE_SNAPSHOT = "insert commits after the delete's snapshot"
DELETE_COMMITS_IN_INSERT_SNAPSHOT = "delete commits after the insert's snapshot"
ORDERS = [
    INSERT_THEN_DELETE_WAITS,
    DELETE_THEN_INSERT_WAITS,
    INSERT_COMMITS_IN_DELETE_SNAPSHOT,
    DELETE_COMMITS_IN_INSERT_SNAPSHOT,
]
DELETE_SIDE = {INSERT_THEN_DELETE_WAITS, INSERT_COMMITS_IN_DELETE_SNAPSHOT}


async def _person_and_list(db: Database, tag: str = "") -> tuple[int, int]:
    async with db.engine.begin() as conn:
        person = (
            await conn.execute(
                insert(Subscriber)
                .values(
                    email=f"racer{tag}@example.com",
                    name="",
                    attributes={},
                    status="ENABLED",
                    created_at=NOW,
                    updated_at=NOW,
                )
                .returning(Subscriber.id)
            )
        ).scalar_one()
        list_id = (
            await conn.execute(
                insert(MailingList)
                .values(name=f"L{tag}", created_at=NOW, updated_at=NOW)
                .returning(MailingList.id)
            )
        ).scalar_one()
    return int(person), int(list_id)


async def _count(db: Database, table: Any) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@asynccontextmanager
async def _at(db: Database, level: str) -> AsyncIterator[AsyncConnection]:
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level=level)
        yield conn


async def _race(db: Database, level: str, parent: str, order: str) -> str:
    """Run one interleaving; the outcome of the second statement (the one that could miss the first)."""
    person, list_id = await _person_and_list(db)
    subscribe = insert(Subscription).values(
        subscriber_id=person, list_id=list_id, status="CONFIRMED", created_at=NOW, updated_at=NOW
    )
    remove = text(f"DELETE FROM {parent} WHERE id = :id").bindparams(
        id=list_id if parent == "lists" else person
    )
    async with _at(db, level) as inserting, _at(db, level) as deleting:
        first, second = (inserting, deleting) if order in DELETE_SIDE else (deleting, inserting)
        first_statement, second_statement = (
            (subscribe, remove) if order in DELETE_SIDE else (remove, subscribe)
        )
        if order in (INSERT_THEN_DELETE_WAITS, DELETE_THEN_INSERT_WAITS):
            await first.begin()
            await first.execute(first_statement)
            pid = await backend_pid(second)
            waiting = asyncio.ensure_future(outcome(second.execute(second_statement)))
            await wait_until_blocked(db, pid, waiting=waiting)
            await first.commit()
            result = await waiting
        else:
            await backend_pid(second)
            await first.begin()
            await first.execute(first_statement)
            await first.commit()
            result = await outcome(second.execute(second_statement))
        if result == OK:
            await second.commit()
        else:
            await second.rollback()
    return result


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("parent", ["lists", "subscribers"])
@pytest.mark.parametrize("level", LEVELS)
async def test_a_delete_racing_a_subscription_leaves_no_orphan(
    db: Database, level: str, parent: str, order: str
) -> None:
    result = await _race(db, level, parent, order)
    assert await orphans(db) == 0
    parent_table = MailingList if parent == "lists" else Subscriber
    if level == "READ COMMITTED":
        # The second statement reads the latest committed state: the delete cascades, the insert fails the key.
        assert result == (OK if order in DELETE_SIDE else FOREIGN_KEY_VIOLATION)
        assert await _count(db, parent_table) == 0
        assert await _count(db, Subscription) == 0
    else:
        # The second statement's snapshot misses the first's change, so it must not act on it.
        assert result == SERIALIZATION_FAILURE
        if order in DELETE_SIDE:
            assert (await _count(db, parent_table), await _count(db, Subscription)) == (1, 1)
        else:
            assert (await _count(db, parent_table), await _count(db, Subscription)) == (0, 0)


# --- emailkit's own functions, with the session default set ---------------------------------------------------


@pytest.fixture(params=["repeatable read", "read committed"])
async def defaulted(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A second Database on the same PostgreSQL database whose sessions default to the given isolation."""
    async with default_isolation(db, request.param) as other:
        yield other


class _Counted:
    """A unit of work for run_in_transaction that counts its runs (a rerun shows a refused transaction)."""

    def __init__(self, work: Callable[[AsyncSession], Awaitable[Any]]) -> None:
        self.work = work
        self.runs = 0

    async def __call__(self, session: AsyncSession) -> Any:
        self.runs += 1
        return await self.work(session)


async def _level(db: Database) -> str:
    async with db.transaction() as s:
        return str((await s.execute(text("SHOW transaction_isolation"))).scalar_one())


async def _holding(
    db: Database, first: Callable[[AsyncSession], Awaitable[Any]], second: _Counted
) -> asyncio.Future[Any]:
    """`first` runs in a transaction left open while `second` (through run_in_transaction) starts and waits
    for its locks; then `first` commits. Returns `second`'s future."""
    async with db.transaction() as s:
        await first(s)
        later = asyncio.ensure_future(run_in_transaction(db, second))
        await wait_until_blocked(db, waiting=later)
    return later


async def _expect_domain_error(future: Awaitable[Any], code: ErrorCode) -> None:
    with pytest.raises(DomainError) as caught:
        await future
    assert [e.code for e in caught.value.errors] == [code]


ROUNDS = 3


async def test_subscribing_functions_race_deletes_without_orphans(defaulted: Database) -> None:
    db = defaulted
    above = await _level(db) == "repeatable read"
    # Under REPEATABLE READ the second transaction's snapshot misses the first's commit: refused, then rerun.
    runs_when_refused = 2 if above else 1
    for round_no in range(ROUNDS):
        tag = f"{round_no}"

        # createSubscriber holds the list; deleteList waits, then takes the new subscription with it.
        (_, list_id) = await _person_and_list(db, f"a{tag}")
        delete = _Counted(lambda s, lid=list_id: lists.delete_list(s, lid))
        later = await _holding(
            db,
            lambda s, lid=list_id: subscribers.create_subscriber(
                s, f"new-a{tag}@example.com", list_ids=[lid]
            ),
            delete,
        )
        await later
        assert delete.runs == runs_when_refused

        # deleteList first; createSubscriber waits on the list, then finds it gone.
        (_, list_id) = await _person_and_list(db, f"b{tag}")
        create = _Counted(
            lambda s, lid=list_id: subscribers.create_subscriber(s, f"new-b{tag}@example.com", list_ids=[lid])
        )
        later = await _holding(db, lambda s, lid=list_id: lists.delete_list(s, lid), create)
        await _expect_domain_error(later, ErrorCode.LIST_NOT_FOUND)
        assert create.runs == runs_when_refused

        # subscribeToLists holds the subscriber's key; deleteSubscriber waits, then takes its subscriptions.
        person, list_id = await _person_and_list(db, f"c{tag}")
        remove = _Counted(lambda s, p=person: subscribers.delete_subscriber(s, p))
        later = await _holding(
            db, lambda s, p=person, lid=list_id: subscribers.subscribe_to_lists(s, [p], [lid]), remove
        )
        await later
        assert remove.runs == runs_when_refused

        # deleteSubscriber first; subscribeToLists read the subscriber before the delete committed, and its
        # foreign key check waits, then fails: a named userError (READ COMMITTED) or a rerun that finds it gone.
        person, list_id = await _person_and_list(db, f"d{tag}")
        subscribe = _Counted(lambda s, p=person, lid=list_id: subscribers.subscribe_to_lists(s, [p], [lid]))
        later = await _holding(db, lambda s, p=person: subscribers.delete_subscriber(s, p), subscribe)
        await _expect_domain_error(later, ErrorCode.SUBSCRIBER_NOT_FOUND)
        assert subscribe.runs == runs_when_refused

        assert await orphans(db) == 0
    # Every list and subscriber a round deleted is gone with its subscriptions; the created ones remain.
    async with db.session() as s:
        left = set((await s.execute(select(Subscriber.email))).scalars())
    assert {f"new-a{n}@example.com" for n in range(ROUNDS)} <= left
    assert not any(email.startswith("new-b") for email in left)
    assert await _count(db, Subscription) == 0


CSV = b"email,name\n" + b"".join(f"imported{i}@example.com,P{i}\n".encode() for i in range(300))


async def _new_import(db: Database, list_id: int) -> int:
    async def chunks() -> AsyncIterator[bytes]:
        yield CSV

    async with db.transaction() as s:
        return (await imports.create_import(s, ImportRequest("race.csv", [list_id]), chunks())).id


async def test_an_import_races_deleting_its_list_without_orphans(defaulted: Database) -> None:
    db = defaulted
    above = await _level(db) == "repeatable read"
    for round_no in range(ROUNDS):
        await_delete: list[asyncio.Future[Any]] = []
        (_, list_id) = await _person_and_list(db, f"import{round_no}")

        # The import is loading (its transaction holds the list and has written subscriptions) when the list is
        # deleted: the delete waits for the import, then removes the list and everything imported into it.
        delete = _Counted(lambda s, lid=list_id: lists.delete_list(s, lid))

        async def delete_while_loading(
            state: ImportState, lid: int = list_id, work: _Counted = delete
        ) -> None:
            if state.inserted and not await_delete:
                await_delete.append(asyncio.ensure_future(run_in_transaction(db, work)))
                await wait_until_blocked(db, waiting=await_delete[0])

        row = await imports.run_import(db, await _new_import(db, list_id), on_progress=delete_while_loading)
        assert row is not None and (row.status, row.inserted) == (ImportStatus.FINISHED, 300)
        await await_delete[0]
        assert delete.runs == (2 if above else 1)
        assert await orphans(db) == 0
        assert await _count(db, Subscription) == 0

        # The list is being deleted when the import starts: it waits, then fails with the reason.
        (_, list_id) = await _person_and_list(db, f"import-late{round_no}")
        import_id = await _new_import(db, list_id)
        async with db.transaction() as s:
            await lists.delete_list(s, list_id)
            running = asyncio.ensure_future(imports.run_import(db, import_id))
            await wait_until_blocked(db, waiting=running)
        row = await running
        assert row is not None
        assert (row.status, row.error, row.inserted) == (
            ImportStatus.FAILED,
            "1 of the given lists do not exist",
            0,
        )
        assert await orphans(db) == 0
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM subscribers"))


async def test_a_conflict_that_never_ends_is_a_clear_error(db: Database) -> None:
    refused = _Counted(
        lambda s: s.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")
        )
    )
    with pytest.raises(ConcurrentChange) as caught:
        await run_in_transaction(db, refused, attempts=3)
    assert refused.runs == 3
    assert [e.code for e in caught.value.errors] == [ErrorCode.CONCURRENT_CHANGE]
