"""SQLite imports: one connection stages every row, then checks them as a set and loads them in chunks in the
import's transaction (SQLite has one writer at a time, so nothing could run beside it).
"""

from __future__ import annotations

import contextlib
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.db.engine import begin_without_write_lock
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import staging as imports_staging
from emailkit.domain.audience.imports.run import Job
from emailkit.domain.audience.lists import require_lists

PROGRESS_EVERY_ROWS: Final = 5_000


async def stage_and_load(job: Job) -> None:
    """One connection does everything: stage all rows, then check them as a set and load them in chunks.

    The rows are staged in a transaction of their own that writes only the connection's temporary table, so
    the database stays free for other writers while the file is read, this run's progress saves among them.
    The import's transaction then holds the database's write lock from its first statement to its commit."""
    run, state, st = job.run, job.run.state, imports_staging.STAGING
    async with run.db.engine.connect() as pinned, run.db.sessionmaker(bind=pinned) as session:
        try:
            async with session.begin():
                # Every statement goes through the session's connection: its transaction ends with the session's.
                conn = await session.connection()
                await begin_without_write_lock(conn)
                await require_lists(session, job.load.list_ids)
                await imports_staging.create_staging(conn, st)
                await imports_staging.insert_rows(conn, st, job.rows, PROGRESS_EVERY_ROWS, job.parsed)
            state.total = state.processed = job.stats.rows
            state.failed = job.stats.invalid
            state.phase = "loading"
            await run.report(force=True)
            async with session.begin():
                conn = await session.connection()
                state.failed += await imports_staging.mark_duplicates(conn, st)
                state.skipped += await imports_staging.mark_suppressed(conn, st, job.load.workspace_id)
                base_skipped = state.skipped

                async def loaded(outcome: imports_load.Outcome) -> None:
                    state.inserted = outcome.inserted
                    state.updated = outcome.updated
                    state.skipped = base_skipped + outcome.existing_skipped
                    await run.report(save=run.save_during_load)

                outcome = await imports_load.load(conn, st, job.load, loaded)
                await loaded(outcome)
                await job.finish(session, conn, st)
        finally:
            await _drop_staging(pinned)


async def _drop_staging(conn: AsyncConnection) -> None:
    """The staged rows go with the run, whatever became of it (a DROP of a temporary table locks nothing but
    the connection's own temporary database)."""
    with contextlib.suppress(Exception):
        async with conn.begin():
            await imports_staging.drop_staging(conn, imports_staging.STAGING)
