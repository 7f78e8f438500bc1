"""CSV imports against the real database: the report, modes, suppressions, and all-or-nothing failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    Import,
    ImportChunk,
    ImportMode,
    ImportRowError,
    ImportStatus,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.domain.audience import lists, subscribers, suppressions
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports import sqlite as imports_sqlite
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.domain.audience.imports.service import ImportRequest
from emailkit.domain.audience.suppressions import email_hash
from tests.support.factories import insert_list

FIXTURES = Path(__file__).parents[1] / "fixtures"


async def start(
    db: Database,
    data: bytes,
    *,
    list_ids: Sequence[int] = (),
    mode: ImportMode = ImportMode.UPSERT,
    status: SubscriptionStatus | None = None,
    column_map: object = None,
    piece: int | None = None,
) -> int:
    async def chunks() -> AsyncIterator[bytes]:
        step = piece or len(data) or 1
        for at in range(0, len(data), step):
            yield data[at : at + step]

    request = ImportRequest("test.csv", list_ids, mode, status, column_map)
    async with db.transaction() as s:
        return (await imports.create_import(s, request, chunks())).id


async def run(db: Database, import_id: int, **kwargs: Any) -> Import:
    row = await imports.run_import(db, import_id, **kwargs)
    assert row is not None
    return row


async def report(db: Database, import_id: int) -> list[tuple[int, str]]:
    async with db.session() as s:
        return [(e.row, e.message) for e in await imports.import_errors(s, import_id, 100)]


async def people(db: Database) -> dict[str, Subscriber]:
    async with db.session() as s:
        return {r.email: r for r in (await s.execute(select(Subscriber))).scalars()}


async def memberships(db: Database) -> dict[tuple[str, int], SubscriptionStatus]:
    async with db.session() as s:
        rows = (
            await s.execute(
                select(Subscriber.email, Subscription.list_id, Subscription.status).join(
                    Subscriber, Subscriber.id == Subscription.subscriber_id
                )
            )
        ).all()
    return {(email, list_id): status for email, list_id, status in rows}


async def add_subscriber(
    db: Database,
    email: str,
    *,
    name: str = "",
    attributes: dict[str, Any] | None = None,
    list_ids: Sequence[int] = (),
    subscription_status: SubscriptionStatus | None = None,
    status: SubscriberStatus | None = None,
) -> None:
    async with db.transaction() as s:
        await subscribers.create_subscriber(
            s,
            email,
            name=name,
            attributes=attributes,
            list_ids=list_ids,
            status=status,
            subscription_status=subscription_status,
        )


async def test_messy_file_imports_with_an_exact_report(db: Database) -> None:
    newsletter = await insert_list(db)
    async with db.transaction() as s:
        await suppressions.add_suppression(s, "ivy@example.com", SuppressionReason.COMPLAINT)
        # What erasure leaves behind: only the hash of the address.
        s.add(
            Suppression(
                email=None,
                email_hash=email_hash("jon@example.com"),
                reason=SuppressionReason.MANUAL,
                source="erasure",
            )
        )
    import_id = await start(db, (FIXTURES / "import_messy.csv").read_bytes(), list_ids=[newsletter])
    seen: list[ImportState] = []

    async def record(state: ImportState) -> None:
        seen.append(ImportState(**vars(state)))

    row = await run(db, import_id, on_progress=record)

    assert row.status is ImportStatus.FINISHED, row.error
    assert (row.total, row.processed, row.inserted, row.updated, row.skipped, row.failed) == (
        11,
        11,
        5,
        0,
        2,
        4,
    )
    assert row.options["encoding"] == "UTF-8 with BOM"
    assert row.options["delimiter"] == ";"
    assert await report(db, import_id) == [
        (4, "Invalid email address: An email address must have an @-sign."),
        (6, "duplicate email: already in row 2"),
        (7, "Invalid email address: The part after the @-sign is not valid. It should have a period."),
        (9, "8 columns, but the header has 7"),
        (12, "suppressed"),
        (13, "suppressed"),
    ]
    found = await people(db)
    assert sorted(found) == [
        "anna@example.com",
        "bob@example.com",
        "eve@example.org",
        "gina@example.com",
        "hank@example.com",
    ]
    assert found["anna@example.com"].name == "Anna Müller"
    assert found["anna@example.com"].attributes == {
        "City": "Berlin",
        "Age": 34,
        "VIP": True,
        "Signup": "2024-01-05",
    }
    assert found["bob@example.com"].attributes["Notes"] == "Line one\r\nLine two"
    assert found["eve@example.org"].attributes == {"City": "Köln; Porz", "Age": "007", "VIP": "yes"}
    assert set((await memberships(db)).values()) == {SubscriptionStatus.CONFIRMED}
    assert len(await memberships(db)) == 5
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(ImportChunk))).scalar_one() == 0

    # Progress went through reading and loading and ended on the final state.
    assert [s.phase for s in seen if s.phase] and seen[-1].status is ImportStatus.FINISHED
    assert {"reading", "loading"} <= {s.phase for s in seen}
    assert [s.processed for s in seen] == sorted(s.processed for s in seen)


async def test_latin1_file(db: Database) -> None:
    import_id = await start(db, (FIXTURES / "import_latin1.csv").read_bytes())
    row = await run(db, import_id)
    assert (row.status, row.inserted, row.failed) == (ImportStatus.FINISHED, 2, 0)
    assert row.options["encoding"] == "Windows-1252 (Latin-1)"
    found = await people(db)
    assert found["jose@example.com"].name == "José García"
    assert found["jose@example.com"].attributes == {"city": "Málaga", "note": "Café €5"}
    assert found["zoe@example.com"].attributes == {"city": "København"}


UPDATE_CSV = b"email,name,City,address.zip\nanna@example.com,,Berlin,10115\nnew@example.com,New,Paris,\n"


async def test_upsert_updates_existing_subscribers_and_merges_attributes(db: Database) -> None:
    newsletter = await insert_list(db)
    other = await insert_list(db, "Other")
    await add_subscriber(
        db,
        "anna@example.com",
        name="Old Name",
        attributes={"City": "Rome", "address": {"city": "Rome"}, "keep": 1},
        list_ids=[newsletter],
        subscription_status=SubscriptionStatus.UNSUBSCRIBED,
    )
    row = await run(db, await start(db, UPDATE_CSV, list_ids=[newsletter, other]))

    assert (row.status, row.inserted, row.updated, row.skipped, row.failed) == (
        ImportStatus.FINISHED,
        1,
        1,
        0,
        0,
    )
    found = await people(db)
    # An empty cell leaves the name alone; nested attributes merge key by key.
    assert found["anna@example.com"].name == "Old Name"
    assert found["anna@example.com"].attributes == {
        "City": "Berlin",
        "address": {"city": "Rome", "zip": 10115},
        "keep": 1,
    }
    assert found["new@example.com"].attributes == {"City": "Paris"}
    assert await memberships(db) == {
        # An import never re-subscribes someone who unsubscribed.
        ("anna@example.com", newsletter): SubscriptionStatus.UNSUBSCRIBED,
        ("anna@example.com", other): SubscriptionStatus.CONFIRMED,
        ("new@example.com", newsletter): SubscriptionStatus.CONFIRMED,
        ("new@example.com", other): SubscriptionStatus.CONFIRMED,
    }


async def test_skip_existing_leaves_existing_subscribers_alone(db: Database) -> None:
    newsletter = await insert_list(db)
    await add_subscriber(db, "anna@example.com", name="Old Name", attributes={"City": "Rome"})
    row = await run(db, await start(db, UPDATE_CSV, list_ids=[newsletter], mode=ImportMode.SKIP_EXISTING))

    assert (row.status, row.inserted, row.updated, row.skipped, row.failed) == (
        ImportStatus.FINISHED,
        1,
        0,
        1,
        0,
    )
    found = await people(db)
    assert (found["anna@example.com"].name, found["anna@example.com"].attributes) == (
        "Old Name",
        {"City": "Rome"},
    )
    assert await memberships(db) == {("new@example.com", newsletter): SubscriptionStatus.CONFIRMED}
    # Skipped existing people are counted, not reported row by row.
    assert await report(db, row.id) == []


async def test_subscription_status_follows_opt_in_and_never_resubscribes(db: Database) -> None:
    double = await insert_list(db, "Double", OptIn.DOUBLE)
    await add_subscriber(db, "pending@example.com", list_ids=[double])
    await add_subscriber(
        db, "gone@example.com", list_ids=[double], subscription_status=SubscriptionStatus.UNSUBSCRIBED
    )
    await add_subscriber(db, "blocked@example.com", status=SubscriberStatus.BLOCKLISTED)
    csv = b"email\npending@example.com\ngone@example.com\nblocked@example.com\nfresh@example.com\n"

    await run(db, await start(db, csv, list_ids=[double]))
    assert await memberships(db) == {
        ("pending@example.com", double): SubscriptionStatus.UNCONFIRMED,
        ("gone@example.com", double): SubscriptionStatus.UNSUBSCRIBED,
        ("fresh@example.com", double): SubscriptionStatus.UNCONFIRMED,
    }

    # An explicit CONFIRMED confirms pending opt-ins, still not the unsubscribed; blocklisted stay out.
    await run(db, await start(db, csv, list_ids=[double], status=SubscriptionStatus.CONFIRMED))
    assert await memberships(db) == {
        ("pending@example.com", double): SubscriptionStatus.CONFIRMED,
        ("gone@example.com", double): SubscriptionStatus.UNSUBSCRIBED,
        ("fresh@example.com", double): SubscriptionStatus.CONFIRMED,
    }

    # Recording opt-outs from another system is always allowed, blocklisted people included.
    await run(
        db,
        await start(
            db,
            b"email\nfresh@example.com\nblocked@example.com\n",
            list_ids=[double],
            status=SubscriptionStatus.UNSUBSCRIBED,
        ),
    )
    found = await memberships(db)
    assert found[("fresh@example.com", double)] is SubscriptionStatus.UNSUBSCRIBED
    assert found[("blocked@example.com", double)] is SubscriptionStatus.UNSUBSCRIBED


async def test_column_map_names_the_columns(db: Database) -> None:
    csv = "Mail;Vorname;Stadt;Intern;Kunde seit\nzoe@example.com;Zoë;Köln;geheim;2019\n".encode()
    column_map = {"Mail": "email", "Vorname": "name", "Stadt": "address.city", "Intern": "-"}
    row = await run(db, await start(db, csv, column_map=column_map))
    assert row.status is ImportStatus.FINISHED, row.error
    found = (await people(db))["zoe@example.com"]
    assert (found.name, found.attributes) == ("Zoë", {"address": {"city": "Köln"}, "Kunde seit": 2019})


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


async def test_a_large_upload_is_stored_in_chunks_and_streamed(db: Database) -> None:
    count = 70_000
    body = "".join(f"user{i}@example.com,User {i},{i % 7}\n" for i in range(count))
    data = ("email,name,group\n" + body + "broken-address,x,1\n").encode()
    assert len(data) > 2 * imports.CHUNK_BYTES
    import_id = await start(db, data, piece=77_777)
    async with db.session() as s:
        stored = (await s.execute(select(func.count()).select_from(ImportChunk))).scalar_one()
        assert stored == -(-len(data) // imports.CHUNK_BYTES)
    states: list[tuple[str, int]] = []

    async def record(state: ImportState) -> None:
        states.append((state.phase, state.processed))

    row = await run(db, import_id, on_progress=record)
    assert (row.status, row.total, row.inserted, row.failed) == (ImportStatus.FINISHED, count + 1, count, 1)
    assert await report(db, import_id) == [
        (count + 2, "Invalid email address: An email address must have an @-sign.")
    ]
    reading = [p for phase, p in states if phase == "reading"]
    assert len(reading) > 3 and reading == sorted(reading)
    async with db.session() as s:
        total = (await s.execute(select(func.count()).select_from(Subscriber))).scalar_one()
        sample = (
            await s.execute(select(Subscriber).where(Subscriber.email == "user69999@example.com"))
        ).scalar_one()
        errors = (await s.execute(select(func.count()).select_from(ImportRowError))).scalar_one()
    assert (total, errors) == (count, 1)
    assert (sample.name, sample.attributes) == ("User 69999", {"group": 69999 % 7})


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
