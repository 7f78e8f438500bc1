"""CSV imports against the real database: all-or-nothing failure, an import that ended or was taken over,
other writers changing subscribers or lists meanwhile, and imports running at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    Import,
    ImportChunk,
    ImportStatus,
    Subscriber,
    SubscriptionStatus,
)
from emailkit.domain.audience import lists, subscribers
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports import sqlite as imports_sqlite
from emailkit.domain.audience.imports.progress import ImportState
from tests.support.factories import insert_list
from tests.support.import_job import UPDATE_CSV, add_subscriber, memberships, people, report, run, start


@pytest.mark.parametrize("phase", ["reading", "loading"])
async def test_a_failure_midway_writes_nothing(
    db: Database, phase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small load chunks and progress steps, so the failure comes after some rows were already written.
    monkeypatch.setattr(imports, "LOAD_CHUNK_ROWS", 3)
    monkeypatch.setattr(imports_sqlite, "PROGRESS_EVERY_ROWS", 2)
    newsletter = await insert_list(db)
    await add_subscriber(db, "old@example.com", name="Old", list_ids=[newsletter])
    csv = (
        "email,name\n"
        + "".join(f"u{i}@example.com,U{i}\n" for i in range(12))
        + "old@example.com,New\nbad,x\n"
    )

    async def explode(state: ImportState) -> None:
        if state.phase == phase and (state.inserted > 0 if phase == "loading" else state.processed > 4):
            raise RuntimeError("worker lost its database connection")

    row = await run(db, await start(db, csv.encode(), list_ids=[newsletter]), on_progress=explode)

    assert row.status is ImportStatus.FAILED
    assert row.error == "RuntimeError: worker lost its database connection"
    assert (row.inserted, row.updated) == (0, 0)
    found = await people(db)
    assert list(found) == ["old@example.com"]
    assert found["old@example.com"].name == "Old"
    assert await memberships(db) == {("old@example.com", newsletter): SubscriptionStatus.CONFIRMED}
    assert await report(db, row.id) == []
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(ImportChunk))).scalar_one() == 0


async def test_an_ended_import_does_not_run_again(db: Database) -> None:
    import_id = await start(db, b"email\na@example.com\n")
    first = await run(db, import_id)
    again = await run(db, import_id)
    assert (first.status, again.status) == (ImportStatus.FINISHED, ImportStatus.FINISHED)
    assert (again.attempts, again.inserted) == (1, 1)


async def test_a_run_that_was_taken_over_does_not_commit(db: Database) -> None:
    import_id = await start(db, b"email\n" + b"".join(b"u%d@example.com\n" % i for i in range(10)))

    async def take_over(state: ImportState) -> None:
        if state.phase == "reading":
            # What a redelivered job does when it claims the import.
            async with db.transaction() as s:
                await s.execute(
                    update(Import).where(Import.id == import_id).values(attempts=Import.attempts + 1)
                )

    assert await imports.run_import(db, import_id, on_progress=take_over) is None
    assert await people(db) == {}
    async with db.session() as s:
        row = await s.get(Import, import_id)
        assert row is not None and row.status is ImportStatus.RUNNING


async def _flag_then(db: Database, monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Let another writer change the subscribers right after the import flagged the known addresses."""
    real = imports_load.mark_existing

    async def flag_then_change(*args: Any) -> None:
        await real(*args)
        async with db.transaction() as s:
            await change(s)

    monkeypatch.setattr(imports_load, "mark_existing", flag_then_change)


@pytest.mark.postgresql_only
async def test_an_address_added_by_another_writer_meanwhile_is_updated_not_lost(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter = await insert_list(db)
    await add_subscriber(db, "anna@example.com", name="Old Name")

    async def add_new(s: Any) -> None:
        await subscribers.create_subscriber(s, "new@example.com", name="Signed up meanwhile")

    await _flag_then(db, monkeypatch, add_new)
    row = await run(db, await start(db, UPDATE_CSV, list_ids=[newsletter]))
    # The plain INSERT met the new address (a unique violation): that chunk ran again with ON CONFLICT.
    assert (row.status, row.inserted, row.updated, row.failed) == (ImportStatus.FINISHED, 0, 2, 0)
    found = await people(db)
    assert found["new@example.com"].name == "New"
    assert found["new@example.com"].attributes == {"City": "Paris"}
    assert await memberships(db) == {
        ("anna@example.com", newsletter): SubscriptionStatus.CONFIRMED,
        ("new@example.com", newsletter): SubscriptionStatus.CONFIRMED,
    }


@pytest.mark.postgresql_only
async def test_a_known_address_deleted_meanwhile_is_inserted_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter = await insert_list(db)
    await add_subscriber(db, "anna@example.com", name="Old Name", attributes={"keep": 1})

    async def delete_anna(s: Any) -> None:
        await s.execute(delete(Subscriber).where(Subscriber.email == "anna@example.com"))

    await _flag_then(db, monkeypatch, delete_anna)
    row = await run(db, await start(db, UPDATE_CSV, list_ids=[newsletter]))
    assert (row.status, row.inserted, row.updated, row.failed) == (ImportStatus.FINISHED, 2, 0, 0)
    found = await people(db)
    assert found["anna@example.com"].attributes == {"City": "Berlin", "address": {"zip": 10115}}
    assert set(await memberships(db)) == {("anna@example.com", newsletter), ("new@example.com", newsletter)}


async def test_a_list_deleted_before_the_import_runs_fails_it_cleanly(db: Database) -> None:
    newsletter = await insert_list(db)
    kept = await insert_list(db, "Kept")
    import_id = await start(db, UPDATE_CSV, list_ids=[newsletter, kept])
    async with db.transaction() as s:
        await lists.delete_list(s, newsletter)
    row = await run(db, import_id)
    assert (row.status, row.error, row.inserted) == (
        ImportStatus.FAILED,
        "1 of the given lists do not exist",
        0,
    )
    assert await people(db) == {}


async def test_imports_running_at_once_all_finish(db: Database) -> None:
    """Two imports at once (as on two worker threads) both finish, round after round: on SQLite the second
    waits for the first's write lock rather than being refused for the first's commit."""
    newsletter = await insert_list(db)
    rounds = 8
    for n in range(rounds):
        ids = [
            await start(db, f"email\n{who}{n}@example.com\n".encode(), list_ids=[newsletter]) for who in "ab"
        ]
        rows = await asyncio.gather(*(run(db, import_id) for import_id in ids))
        assert [(row.status, row.error, row.inserted) for row in rows] == [
            (ImportStatus.FINISHED, None, 1)
        ] * 2
    assert len(await people(db)) == 2 * rounds
