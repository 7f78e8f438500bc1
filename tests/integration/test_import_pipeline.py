"""The PostgreSQL import pipeline with tiny chunks: every chunk boundary is crossed, so duplicates, suppressions
and known addresses are found across chunks exactly as within one; and the staging table never outlives the
import.

The scenarios of test_import_job_rows and test_import_job_failures_and_races run here again with two rows per chunk (on SQLite they exercise nothing new
but cost little).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from emailkit.db.engine import Database
from emailkit.db.tables.audience import ImportStatus
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import postgres as imports_pg
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports import staging as imports_staging
from tests.integration.test_import_job_failures_and_races import (  # noqa: F401  (collected again, with two-row chunks)
    test_a_failure_midway_writes_nothing,
    test_a_known_address_deleted_meanwhile_is_inserted_again,
    test_an_address_added_by_another_writer_meanwhile_is_updated_not_lost,
)
from tests.integration.test_import_job_rows import (  # noqa: F401  (collected again, with two-row chunks)
    test_messy_file_imports_with_an_exact_report,
    test_skip_existing_leaves_existing_subscribers_alone,
    test_subscription_status_follows_opt_in_and_never_resubscribes,
    test_upsert_updates_existing_subscribers_and_merges_attributes,
)
from tests.support.factories import insert_list
from tests.support.import_job import people, run, start


@pytest.fixture(autouse=True)
def two_row_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(imports_pg, "FEED_CHUNK_ROWS", 2)
    yield


@pytest.fixture(params=["reading", "loading"])
def phase(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def staging_tables(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'emailkit_import_staging%'")
                )
            ).scalars()
        )


def fail_on_call(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, nth: int, message: str
) -> None:
    """Make the `nth` call of `module`.`name` raise RuntimeError(message); the others go through."""
    real = getattr(module, name)
    calls = 0

    async def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise RuntimeError(message)
        return await real(*args)

    monkeypatch.setattr(module, name, failing)


CSV = b"email,name\n" + b"".join(b"p%d@example.com,P%d\n" % (i, i) for i in range(9))


@pytest.mark.postgresql_only
async def test_repeats_across_chunks_name_the_first_row(db: Database) -> None:
    data = (
        b"email\na@example.com\nb@example.com\nc@example.com\nA@example.com\nb@example.com\nd@example.com\n"
    )
    import_id = await start(db, data)
    row = await run(db, import_id)
    assert (row.status, row.inserted, row.failed) == (ImportStatus.FINISHED, 4, 2)
    async with db.session() as s:
        errors = [(e.row, e.message) for e in await imports.import_errors(s, import_id, 10)]
    assert errors == [(5, "duplicate email: already in row 2"), (6, "duplicate email: already in row 3")]
    assert await staging_tables(db) == []


@pytest.mark.postgresql_only
async def test_a_failing_load_stops_the_feeder_and_drops_the_staging_table(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter = await insert_list(db)
    fail_on_call(monkeypatch, imports_load, "load_range", 2, "lost the database")
    row = await run(db, await start(db, CSV, list_ids=[newsletter]))
    assert (row.status, row.error, row.inserted) == (
        ImportStatus.FAILED,
        "RuntimeError: lost the database",
        0,
    )
    assert await people(db) == {}
    assert await staging_tables(db) == []


@pytest.mark.postgresql_only
async def test_a_failing_feeder_fails_the_import_having_written_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_on_call(monkeypatch, imports_staging, "copy_rows", 3, "COPY broke")
    row = await run(db, await start(db, CSV))
    assert (row.status, row.error) == (ImportStatus.FAILED, "RuntimeError: COPY broke")
    assert await people(db) == {}
    assert await staging_tables(db) == []


@pytest.mark.postgresql_only
async def test_a_killed_imports_staging_table_is_swept_by_the_next(db: Database) -> None:
    leftover = imports_staging.staging_table(imports_pg.staging_name(424242, 1), shared=True)
    async with db.engine.begin() as conn:
        await imports_staging.create_staging(conn, leftover)
    assert await staging_tables(db) == [leftover.name]
    row = await run(db, await start(db, CSV))
    assert (row.status, row.inserted) == (ImportStatus.FINISHED, 9)
    assert await staging_tables(db) == []


def test_a_chunk_of_wide_rows_ends_at_its_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports_pg, "FEED_CHUNK_BYTES", 1000)
    wide = iter([(i, f"p{i}@example.com", "", '{"blob":"' + "x" * 300 + '"}', None) for i in range(10)])
    sizes = []
    while batch := imports_pg._take(wide, 50):
        sizes.append(len(batch))
    # About 326 characters a row: the fourth row passes 1,000, so chunks of four (and the two rows left).
    assert sizes == [4, 4, 2]
