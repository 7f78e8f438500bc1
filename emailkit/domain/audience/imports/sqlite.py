"""SQLite imports: one connection stages every row, checks them as a set, then loads them in chunks, all in
the import's transaction (SQLite has one writer at a time, so nothing could run beside it).
"""

from __future__ import annotations

import contextlib
from typing import Final

from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import staging as imports_staging
from emailkit.domain.audience.imports.run import Job
from emailkit.domain.audience.lists import require_lists

PROGRESS_EVERY_ROWS: Final = 5_000


async def stage_and_load(job: Job) -> None:
    """One connection does everything: stage all rows, check them as a set, then load them in chunks."""
    run, state, st = job.run, job.run.state, imports_staging.STAGING
    async with run.db.transaction() as session:
        await require_lists(session, job.load.list_ids)
        conn = await session.connection()
        await imports_staging.create_staging(conn, st)
        try:
            await imports_staging.insert_rows(conn, st, job.rows, PROGRESS_EVERY_ROWS, job.parsed)
            state.total = state.processed = job.stats.rows
            state.failed = job.stats.invalid
            state.phase = "loading"
            await run.report(force=True)
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
            with contextlib.suppress(Exception):
                await imports_staging.drop_staging(conn, st)
