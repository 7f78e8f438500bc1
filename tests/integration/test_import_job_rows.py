"""CSV imports against the real database: the report, encodings, the column map, modes and subscription
statuses, and a large upload stored in chunks."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    ImportChunk,
    ImportMode,
    ImportRowError,
    ImportStatus,
    OptIn,
    Subscriber,
    SubscriberStatus,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.domain.audience import suppressions
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.domain.audience.suppressions import email_hash
from tests.support.factories import insert_list
from tests.support.import_job import UPDATE_CSV, add_subscriber, memberships, people, report, run, start

FIXTURES = Path(__file__).parents[1] / "fixtures"


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
