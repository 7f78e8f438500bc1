"""One run of an import, from its claim (RUNNING) to FINISHED or FAILED: its progress as it goes (`Run`) and
the pass over its file that the SQLite and PostgreSQL paths (`sqlite`, `postgres`) share (`Job`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Table, delete, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Import, ImportChunk, ImportStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import staging as imports_staging
from emailkit.domain.audience.imports.csvfile import Dialect
from emailkit.domain.audience.imports.progress import (
    FINAL_STATUSES,
    ImportState,
    ProgressCallback,
    progress_channel,
)
from emailkit.domain.audience.imports.rows import ParseStats, StagedRow
from emailkit.domain.automation import entry as flow_entry
from emailkit.domain.quotas import ensure_within_subscriber_quota
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.domain.webhooks_out.emitters import import_finished
from emailkit.metrics import record as metrics

PROGRESS_SAVE_SECONDS: Final = 0.5


class Superseded(Exception):
    """Another run of the same import took over (a redelivered job); this one must not commit."""


@dataclass
class Run:
    """An import being run by one attempt; its progress is saved on the import row (at most every
    PROGRESS_SAVE_SECONDS unless forced) and published."""

    db: Database
    import_id: int
    attempt: int
    publisher: CoalescingPublisher | None
    callback: ProgressCallback | None
    state: ImportState
    save_during_load: bool
    _saved_at: float = field(default=0.0)

    async def report(self, *, save: bool = True, force: bool = False) -> None:
        now = time.monotonic()
        if save and (force or now - self._saved_at >= PROGRESS_SAVE_SECONDS):
            self._saved_at = now
            async with self.db.transaction() as session:
                await session.execute(
                    update(Import)
                    .where(Import.id == self.import_id, Import.attempts == self.attempt)
                    .values(**self.state.counters(), updated_at=utcnow())
                )
        await self.publish()

    async def publish(self) -> None:
        if self.publisher is not None:
            channel = progress_channel(self.import_id)
            if self.state.final:
                await self.publisher.publish_now(channel, self.state.message())
            else:
                await self.publisher.publish(channel, self.state.message())
        if self.callback is not None:
            await self.callback(self.state)


@dataclass
class Job:
    """One pass over an import's file: what both databases' loaders need."""

    run: Run
    options: dict[str, Any]
    dialect: Dialect
    rows: Iterator[StagedRow]
    stats: ParseStats
    load: imports_load.LoadOptions

    async def parsed(self, _: int = 0) -> None:
        state = self.run.state
        state.processed = self.stats.rows
        state.total = max(state.total, self.stats.rows)
        await self.run.report()

    async def finish(self, session: AsyncSession, conn: AsyncConnection, st: Table) -> None:
        """In the import's transaction, after the load: the workspace's subscriber quota (over it, the whole
        import fails with the reason and nothing of it stays), the report, the counters, and the upload's
        removal."""
        state = self.run.state
        if state.inserted:
            await ensure_within_subscriber_quota(session, added=state.inserted)
        await imports_staging.store_errors(
            conn, st, self.run.import_id, self.load.workspace_id, self.load.max_errors
        )
        finished = await session.execute(
            update(Import)
            .where(Import.id == self.run.import_id, Import.attempts == self.run.attempt)
            .values(
                status=ImportStatus.FINISHED,
                **state.counters(),
                options={
                    **self.options,
                    "encoding": self.dialect.encoding_label,
                    "delimiter": self.dialect.delimiter,
                },
                finished_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        if not finished.rowcount:  # type: ignore[attr-defined]
            raise Superseded()
        for outcome in ("inserted", "updated", "skipped", "failed"):
            metrics.import_rows(outcome, getattr(state, outcome))
        if self.options.get("triggerFlows", True) is not False:
            # Everyone this import subscribed (or confirmed) enters the lists' flows with it, or nobody does.
            await flow_entry.subscribed(
                session,
                workspace_id=self.load.workspace_id,
                list_ids=self.load.list_ids,
                changed_at=self.load.now,
            )
        await import_finished(session, self.run.import_id, ImportStatus.FINISHED, state.counters())
        await session.execute(delete(ImportChunk).where(ImportChunk.import_id == self.run.import_id))


async def claim(db: Database, import_id: int) -> Import | None:
    """Start a run: QUEUED (or RUNNING, when a crashed run's job is redelivered) becomes RUNNING."""
    async with db.transaction() as session:
        claimed = (
            await session.execute(
                update(Import)
                .where(Import.id == import_id, Import.status.in_([ImportStatus.QUEUED, ImportStatus.RUNNING]))
                .values(
                    status=ImportStatus.RUNNING,
                    attempts=Import.attempts + 1,
                    started_at=utcnow(),
                    updated_at=utcnow(),
                    total=0,
                    processed=0,
                    inserted=0,
                    updated=0,
                    skipped=0,
                    failed=0,
                    error=None,
                )
                .returning(Import.id)
            )
        ).first()
        if claimed is None:
            return None
        return await session.get(Import, import_id, populate_existing=True)


async def finish_failed(
    db: Database, import_id: int, attempt: int | None, reason: str, run: Run | None
) -> None:
    """The import FAILED for `reason`, unless it has ended or (with `attempt`) a newer run took it over; its
    upload is removed."""
    async with db.transaction() as session:
        stmt = update(Import).where(Import.id == import_id, Import.status.not_in(list(FINAL_STATUSES)))
        if attempt is not None:
            stmt = stmt.where(Import.attempts == attempt)
        result = await session.execute(
            stmt.values(
                status=ImportStatus.FAILED,
                error=reason,
                inserted=0,
                updated=0,
                finished_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        if result.rowcount:  # type: ignore[attr-defined]
            await session.execute(delete(ImportChunk).where(ImportChunk.import_id == import_id))
            counters = {**(run.state.counters() if run is not None else {}), "inserted": 0, "updated": 0}
            await import_finished(session, import_id, ImportStatus.FAILED, counters, reason)
    if run is not None and result.rowcount:  # type: ignore[attr-defined]
        run.state.status = ImportStatus.FAILED
        run.state.error = reason
        run.state.inserted = run.state.updated = 0
        await run.publish()
