"""PostgreSQL imports: the file is parsed and staged on one connection while the import's transaction loads.

A feeder parses the file in a worker thread, a chunk at a time, and on a connection of its own COPYs each chunk
into the import's UNLOGGED staging table, marks its duplicates and suppressed addresses, and commits. The
import's transaction (another connection, which alone writes subscribers) loads whatever chunks are ready, so
the Python parse, the COPY and the upserts run side by side on separate cores. The staging table is scratch
space, never read by anything else: it is dropped when the import ends, and a crash's leftover is swept by
the next import.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import Import, ImportStatus
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import staging as imports_staging
from emailkit.domain.audience.imports.rows import StagedRow
from emailkit.domain.audience.imports.run import Job
from emailkit.domain.audience.lists import require_lists

log = logging.getLogger(__name__)

# Rows parsed and staged at a time: small enough that the load starts early and memory stays a few MB,
# large enough that each COPY and check statement is worth its round trip. A chunk of wide rows (large
# attribute sets) ends sooner, at FEED_CHUNK_BYTES of cell text, so memory stays bounded whatever the width.
FEED_CHUNK_ROWS: Final = 25_000
FEED_CHUNK_BYTES: Final = 8 << 20
WORK_MEM: Final = "64MB"


@dataclass
class Staged:
    """Rows lo..hi are staged and checked (committed), ready to load."""

    lo: int
    hi: int
    duplicates: int
    suppressed: int
    # The whole file had been parsed when this was handed over.
    parsed_all: bool = False

    def merge(self, later: Staged) -> Staged:
        return Staged(
            lo=self.lo,
            hi=later.hi,
            duplicates=self.duplicates + later.duplicates,
            suppressed=self.suppressed + later.suppressed,
            parsed_all=later.parsed_all,
        )


def staging_name(import_id: int, attempt: int) -> str:
    return f"{imports_staging.STAGING_NAME}_{import_id}_{attempt}"


def _import_id(name: str, prefix: str) -> int | None:
    import_id, _, attempt = name[len(prefix) :].partition("_")
    return int(import_id) if import_id.isdigit() and attempt.isdigit() else None


async def sweep_staging(conn: AsyncConnection) -> None:
    """Drop staging tables left by imports that ended without dropping theirs (a killed worker).

    The staging tables of every workspace's imports share the schema, so `conn` must see every workspace's
    imports (checked out for all workspaces): a table is dropped only when no import of any workspace still
    runs with it."""
    prefix = imports_staging.STAGING_NAME + "_"
    names = (
        await conn.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE :pattern"
            ),
            {"pattern": prefix.replace("_", r"\_") + "%"},
        )
    ).scalars()
    tables = [(import_id, name) for name in names if (import_id := _import_id(name, prefix)) is not None]
    if not tables:
        return
    running = set(
        (
            await conn.execute(
                select(Import.id).where(
                    Import.id.in_([import_id for import_id, _ in tables]),
                    Import.status.in_([ImportStatus.QUEUED, ImportStatus.RUNNING]),
                )
            )
        ).scalars()
    )
    for import_id, name in tables:
        if import_id not in running:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))


def _take(rows: Iterator[StagedRow], count: int) -> list[StagedRow]:
    """The next `count` rows, or fewer once their text reaches FEED_CHUNK_BYTES characters."""
    batch: list[StagedRow] = []
    size = 0
    limit = FEED_CHUNK_BYTES
    for row in itertools.islice(rows, count):
        batch.append(row)
        size += len(row[2]) + len(row[3]) + len(row[1] or "")
        if size >= limit:
            break
    return batch


async def _feed(
    db: Database,
    st: Table,
    workspace_id: int,
    rows: Iterator[StagedRow],
    ready: asyncio.Queue[Staged | None],
    parsed: Callable[[], Awaitable[None]],
    chunk_rows: int,
) -> None:
    async with db.engine.connect() as conn:
        # The next chunk is parsed in a thread while this one is copied and checked.
        pending = asyncio.ensure_future(asyncio.to_thread(_take, rows, chunk_rows))
        analyzed = False
        try:
            while True:
                batch = await pending
                if not batch:
                    break
                pending = asyncio.ensure_future(asyncio.to_thread(_take, rows, chunk_rows))
                lo, hi = batch[0][0], batch[-1][0]
                async with conn.begin():
                    await imports_staging.copy_rows(conn, st, batch)
                    if not analyzed:
                        # Without statistics the planner takes the new table for empty and checks each row by
                        # scanning the others; the first chunk shows it what the rest looks like.
                        await conn.execute(text(f'ANALYZE "{st.name}"'))
                        analyzed = True
                    duplicates = await imports_staging.mark_duplicates_in(conn, st, lo, hi)
                    suppressed = await imports_staging.mark_suppressed(conn, st, workspace_id, lo, hi)
                del batch
                await parsed()
                await ready.put(Staged(lo, hi, duplicates, suppressed, parsed_all=_parse_finished(pending)))
        finally:
            # The thread cannot be interrupted; let it finish its chunk before the file is closed or reread.
            if not pending.done():
                await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: a parse that failed after the feeder stopped is of no interest
            ready.put_nowait(None)


def _parse_finished(pending: asyncio.Future[list[StagedRow]]) -> bool:
    """Whether the parse has reached the end of the file: the next chunk is already known to be empty."""
    return pending.done() and not pending.exception() and not pending.result()


async def staged_chunks(
    db: Database,
    st: Table,
    workspace_id: int,
    rows: Iterator[StagedRow],
    parsed: Callable[[], Awaitable[None]],
    chunk_rows: int | None = None,
) -> AsyncGenerator[Staged, None]:
    """Staged, checked row ranges as the feeder commits them; all those ready at once come as one range, so a
    load that falls behind catches up in larger statements. Raises what the feeder raised."""
    ready: asyncio.Queue[Staged | None] = asyncio.Queue()
    feeder = asyncio.create_task(
        _feed(db, st, workspace_id, rows, ready, parsed, chunk_rows or FEED_CHUNK_ROWS)
    )
    try:
        finished = False
        while not finished:
            first = await ready.get()
            if first is None:
                break
            staged = first
            while not ready.empty():
                more = ready.get_nowait()
                if more is None:
                    finished = True
                    break
                staged = staged.merge(more)
            yield staged
        await feeder
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder


async def stage_and_load(job: Job) -> None:
    """Chunks are parsed and staged on a connection of their own while the import's transaction loads the
    chunks already checked: the parse, the COPY and the load overlap instead of taking turns."""
    run, state = job.run, job.run.state
    # Named by attempt too: a run that lost its lease may still be winding down with its own table.
    st = imports_staging.staging_table(staging_name(run.import_id, run.attempt), shared=True)
    # For all workspaces: the sweep weighs every workspace's imports (see sweep_staging).
    with all_workspaces():
        async with run.db.engine.begin() as conn:
            await sweep_staging(conn)
            await imports_staging.create_staging(conn, st)
    try:
        async with run.db.transaction() as session:
            conn = await session.connection()
            # Committed chunks are read as the feeder commits them, so each statement needs a fresh snapshot,
            # whatever the database's default isolation: it must be the transaction's first statement.
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            # Each load's checks and joins hash a whole range of staged rows; keep that in memory.
            await conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
            # A list deleted since the import was accepted fails it now with that reason; one deleted from
            # here on waits for the import to end, then takes its new subscriptions with it.
            await require_lists(session, job.load.list_ids, hold=True)
            duplicates = suppressed = existing_skipped = 0
            chunks = staged_chunks(run.db, st, job.load.workspace_id, job.rows, job.parsed)
            # aclosing: a failed load must stop the feeder now, not whenever the generator is collected.
            async with contextlib.aclosing(chunks):
                async for staged in chunks:
                    duplicates += staged.duplicates
                    suppressed += staged.suppressed
                    if staged.parsed_all and state.phase != "loading":
                        state.total = state.processed = job.stats.rows
                        state.phase = "loading"
                    outcome = await imports_load.load_range(conn, st, job.load, staged.lo, staged.hi)
                    state.inserted += outcome.inserted
                    state.updated += outcome.updated
                    existing_skipped += outcome.existing_skipped
                    state.failed = job.stats.invalid + duplicates
                    state.skipped = suppressed + existing_skipped
                    await run.report(save=run.save_during_load, force=staged.parsed_all)
            state.phase = "loading"
            state.total = state.processed = job.stats.rows
            state.failed = job.stats.invalid + duplicates
            await job.finish(session, conn, st)
    finally:
        try:
            async with run.db.engine.begin() as conn:
                await imports_staging.drop_staging(conn, st)
        except Exception:
            # Never hide why the import failed (often the same lost database); the next import sweeps it.
            log.warning(
                "import %s: could not drop its staging table %s", run.import_id, st.name, exc_info=True
            )
