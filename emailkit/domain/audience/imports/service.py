"""Subscriber imports from CSV: accepted by the API, run by a background job, all or nothing.

`create_import` validates the request, checks the file's header and stores the file in the database (so a
worker on any machine can read it); the job `run_import` then parses it as a stream into a staging table,
checks it (repeats within the file, suppressions) and loads it in one transaction: it either finishes with every
valid row imported or fails having written nothing. On PostgreSQL the parse and staging run beside the load
(imports_pg). Progress is saved on the import row and published live.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    Import,
    ImportChunk,
    ImportMode,
    ImportRowError,
    ImportStatus,
    MailingList,
    SubscriptionStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain import transactions
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.audience.imports import postgres as imports_pg
from emailkit.domain.audience.imports import staging as imports_staging
from emailkit.domain.audience.imports.columns import check_column_map
from emailkit.domain.audience.imports.csvfile import SAMPLE_BYTES, Dialect, inspect_sample, open_text
from emailkit.domain.audience.imports.rows import ParseStats, StagedRow, parse_rows
from emailkit.domain.audience.lists import require_lists
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.ports.queue import JobQueue
from emailkit.domain.throttle import CoalescingPublisher

log = logging.getLogger(__name__)

IMPORT_JOB: Final = "import_subscribers"
CHUNK_BYTES: Final = 1 << 20
# A `csv` string travels inside a JSON request; bigger files belong in an upload.
CSV_TEXT_MAX_BYTES: Final = 16 << 20
MAX_LISTS: Final = 100
# Rows kept in an import's report; the counters stay exact beyond it.
MAX_STORED_ERRORS: Final = 10_000
MAX_ERRORS_PAGE: Final = 1000
LOAD_CHUNK_ROWS: Final = 250_000
PROGRESS_EVERY_ROWS: Final = 5_000
PROGRESS_SAVE_SECONDS: Final = 0.5
FINAL_STATUSES: Final = frozenset({ImportStatus.FINISHED, ImportStatus.FAILED})


def progress_channel(import_id: int) -> str:
    return f"import:{import_id}:progress"


@dataclass
class ImportState:
    """What an import has done so far; the message of the live channel."""

    id: int
    status: ImportStatus
    total: int = 0
    processed: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    error: str | None = None
    # "reading" the file, "loading" it into the database; live messages only (not stored).
    phase: str = ""

    @classmethod
    def of(cls, row: Import) -> ImportState:
        return cls(
            id=row.id,
            status=row.status,
            total=row.total,
            processed=row.processed,
            inserted=row.inserted,
            updated=row.updated,
            skipped=row.skipped,
            failed=row.failed,
            error=row.error,
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ImportState:
        return cls(
            id=int(message["id"]),
            status=ImportStatus(str(message["status"])),
            total=int(message["total"]),
            processed=int(message["processed"]),
            inserted=int(message["inserted"]),
            updated=int(message["updated"]),
            skipped=int(message["skipped"]),
            failed=int(message["failed"]),
            error=message.get("error") if isinstance(message.get("error"), str) else None,
            phase=str(message.get("phase") or ""),
        )

    def counters(self) -> dict[str, int]:
        """The counts, by the names the import row, the live message and the API share."""
        return {
            "total": self.total,
            "processed": self.processed,
            "inserted": self.inserted,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
        }

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            **self.counters(),
            "error": self.error,
            "phase": self.phase,
        }

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


ProgressCallback = Callable[[ImportState], Awaitable[None]]


# --- requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRequest:
    source_name: str
    list_ids: Sequence[int] = ()
    mode: ImportMode = ImportMode.UPSERT
    subscription_status: SubscriptionStatus | None = None
    column_map: object = None
    # The input field the file came in (`csv` or `file`), for userErrors about its content.
    source_field: str = "file"


async def _new_import(session: AsyncSession, request: ImportRequest) -> tuple[Import, dict[str, str]]:
    column_map = check_column_map(request.column_map)
    list_ids = list(dict.fromkeys(request.list_ids))
    if len(list_ids) > MAX_LISTS:
        raise DomainError.single(ErrorCode.INVALID_INPUT, f"At most {MAX_LISTS} lists per import", "listIds")
    await require_lists(session, list_ids)
    status = request.subscription_status
    row = Import(
        status=ImportStatus.QUEUED,
        source_name=(request.source_name or "")[:255],
        options={"columnMap": column_map, "subscriptionStatus": status.value if status else None},
        list_ids=list_ids,
        mode=request.mode,
        total=0,
        processed=0,
        inserted=0,
        updated=0,
        skipped=0,
        failed=0,
        attempts=0,
    )
    session.add(row)
    await session.flush()
    return row, column_map


def _check_header(sample: bytes, complete: bool, column_map: Mapping[str, str], field: str) -> Dialect:
    dialect, _ = inspect_sample(sample, complete=complete, column_map=column_map, source_field=field)
    return dialect


async def create_import(
    session: AsyncSession,
    request: ImportRequest,
    chunks: AsyncIterable[bytes],
    *,
    max_bytes: int | None = None,
) -> Import:
    """Accept a file for import (QUEUED); the caller enqueues `IMPORT_JOB` once this has committed.

    The header is checked now, so an unusable file or columnMap is a userError rather than a failed job."""
    row, column_map = await _new_import(session, request)
    field = request.source_field
    size = 0
    seq = 0
    pending = bytearray()
    checked = False

    async def store(data: bytes, *, last: bool) -> None:
        nonlocal seq, checked
        if not checked:
            _check_header(data, last and seq == 0 and len(data) <= SAMPLE_BYTES, column_map, field)
            checked = True
        await session.execute(insert(ImportChunk).values(import_id=row.id, seq=seq, data=data))
        seq += 1

    async for piece in chunks:
        size += len(piece)
        if max_bytes is not None and size > max_bytes:
            raise DomainError.single(
                ErrorCode.TOO_LONG, f"The file must be at most {max_bytes // (1 << 20)} MiB", field
            )
        pending += piece
        while len(pending) >= CHUNK_BYTES:
            data = bytes(pending[:CHUNK_BYTES])
            del pending[:CHUNK_BYTES]
            await store(data, last=False)
    if pending or seq == 0:
        await store(bytes(pending), last=True)
    row.source_bytes = size
    return row


async def create_local_import(
    session: AsyncSession, request: ImportRequest, sample: bytes, size: int
) -> Import:
    """An import of a file this process reads itself (the CLI): validated like `create_import`, not stored."""
    row, column_map = await _new_import(session, request)
    _check_header(sample, len(sample) >= size, column_map, request.source_field)
    row.source_bytes = size
    return row


async def enqueue_import(jobs: JobQueue | None, db: Database, import_id: int) -> None:
    """Hand a committed import to the workers; if that is impossible the import fails rather than waiting."""
    if jobs is None:
        await _finish_failed(db, import_id, None, "No job queue is configured to run imports", None)
        return
    try:
        await jobs.enqueue(IMPORT_JOB, {"import_id": import_id})
    except Exception as exc:
        log.exception("import %s could not be queued", import_id)
        await _finish_failed(db, import_id, None, f"The import could not be queued: {exc}", None)


async def list_ids_by_name(session: AsyncSession, names: Sequence[str]) -> list[int]:
    """The ids of the lists with these exact names (for the CLI); unknown or ambiguous names raise."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    rows = (
        await session.execute(select(MailingList.name, MailingList.id).where(MailingList.name.in_(wanted)))
    ).all()
    by_name: dict[str, list[int]] = {}
    for name, list_id in rows:
        by_name.setdefault(name, []).append(list_id)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise DomainError.single(
            ErrorCode.LIST_NOT_FOUND, "No list named " + ", ".join(map(repr, missing)), "list"
        )
    ambiguous = [n for n in wanted if len(by_name[n]) > 1]
    if ambiguous:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, "Several lists are named " + ", ".join(map(repr, ambiguous)), "list"
        )
    return [by_name[n][0] for n in wanted]


# --- reads ------------------------------------------------------------------------------------------------


async def find_imports(session: AsyncSession, *, first: int, after: int | None) -> Page[Import]:
    """Imports, newest first."""
    return await keyset_page(session, select(Import), Import.id, first=first, after=after, descending=True)


async def import_errors(session: AsyncSession, import_id: int, first: int) -> list[ImportRowError]:
    """The first `first` rows of the import's report, in row order."""
    if first < 0 or first > MAX_ERRORS_PAGE:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, f"first must be between 0 and {MAX_ERRORS_PAGE}", "first"
        )
    stmt = (
        select(ImportRowError)
        .where(ImportRowError.import_id == import_id)
        .order_by(ImportRowError.row, ImportRowError.id)
        .limit(first)
    )
    return list((await session.execute(stmt)).scalars())


async def import_errors_page(
    session: AsyncSession, import_id: int, *, first: int, after_row: int | None
) -> Page[ImportRowError]:
    """A page of the import's report in row order, cut on the row number (one report row per file row)."""
    stmt = select(ImportRowError).where(ImportRowError.import_id == import_id)
    page_stmt = stmt if after_row is None else stmt.where(ImportRowError.row > after_row)
    rows = list(
        (await session.execute(page_stmt.order_by(ImportRowError.row).limit(first + 1))).scalars().all()
    )
    return Page(
        items=rows[:first], keys=[r.row for r in rows[:first]], has_next=len(rows) > first, count_stmt=stmt
    )


# --- the job ----------------------------------------------------------------------------------------------


class _Superseded(Exception):
    """Another run of the same import took over (a redelivered job); this one must not commit."""


@dataclass
class _Run:
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


async def _claim(db: Database, import_id: int) -> Import | None:
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


async def _spool(db: Database, import_id: int) -> IO[bytes]:
    """The stored file, copied to a local temporary file chunk by chunk (the parser wants a file)."""
    spooled = tempfile.TemporaryFile()
    last = -1
    try:
        while True:
            async with db.session() as session:
                chunk = (
                    await session.execute(
                        select(ImportChunk.seq, ImportChunk.data)
                        .where(ImportChunk.import_id == import_id, ImportChunk.seq > last)
                        .order_by(ImportChunk.seq)
                        .limit(1)
                    )
                ).first()
            if chunk is None:
                break
            last = chunk.seq
            spooled.write(chunk.data)
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


def _count_lines(binary: IO[bytes]) -> int:
    """Line breaks in the file: the row count, before quoted multi-line fields are known about."""
    count = 0
    last = b""
    for block in iter(lambda: binary.read(1 << 20), b""):
        count += block.count(b"\n")
        last = block
    binary.seek(0)
    return count + (1 if last and not last.endswith(b"\n") else 0)


async def run_import(
    db: Database,
    import_id: int,
    *,
    publisher: CoalescingPublisher | None = None,
    source: IO[bytes] | None = None,
    on_progress: ProgressCallback | None = None,
) -> Import | None:
    """Run an import to FINISHED or FAILED; repeating it after it ended changes nothing.

    `source` is the file when this process has it (the CLI), else the stored upload is read. `on_progress`
    sees every state change; an exception from it aborts the import like any other failure."""
    row = await _claim(db, import_id)
    if row is None:
        async with db.session() as session:
            return await session.get(Import, import_id)
    run = _Run(
        db=db,
        import_id=import_id,
        attempt=row.attempts,
        publisher=publisher,
        callback=on_progress,
        state=ImportState.of(row),
        # SQLite's single writer is this run's transaction during the load: progress is only published then.
        save_during_load=db.dialect == "postgresql",
    )
    await run.report(force=True)
    try:
        with contextlib.ExitStack() as stack:
            binary = source if source is not None else stack.enter_context(await _spool(db, import_id))
            await _execute_until_settled(run, row, binary)
    except _Superseded:
        log.info("import %s: a newer run took over", import_id)
        return None
    except BaseException as exc:
        reason = _reason(exc)
        if not isinstance(exc, DomainError):
            log.exception("import %s failed", import_id)
        with contextlib.suppress(Exception):
            await _finish_failed(db, import_id, run.attempt, reason, run)
        if not isinstance(exc, Exception):
            raise
    async with db.session() as session:
        return await session.get(Import, import_id)


async def _execute_until_settled(run: _Run, row: Import, binary: IO[bytes]) -> None:
    """Run the import's pass, again when concurrent writers got in its way: conflict-safe once addresses it
    had flagged changed, on a fresh transaction when the database refused it for a concurrent change (a list
    deleted after its snapshot under REPEATABLE READ; a deadlock)."""
    conflict_safe = False
    for attempt in range(1, transactions.ATTEMPTS + 1):
        try:
            await _execute(run, row, binary, conflict_safe=conflict_safe)
            return
        except imports_load.ConflictRetry:
            log.info("import %s: addresses changed meanwhile; running it again, conflict-safe", run.import_id)
            conflict_safe = True
        except DBAPIError as exc:
            if not transactions.is_conflict(exc):
                raise
            if attempt == transactions.ATTEMPTS:
                raise transactions.ConcurrentChange() from exc
            log.info(
                "import %s: refused for a concurrent change (%s); running it again", run.import_id, exc.orig
            )
        binary.seek(0)
    raise transactions.ConcurrentChange()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return str(exc)
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [""])[0][:500]
    return f"{type(orig).__name__}: {first_line}" if first_line else type(orig).__name__


async def _finish_failed(
    db: Database, import_id: int, attempt: int | None, reason: str, run: _Run | None
) -> None:
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
    if run is not None and result.rowcount:  # type: ignore[attr-defined]
        run.state.status = ImportStatus.FAILED
        run.state.error = reason
        run.state.inserted = run.state.updated = 0
        await run.publish()


@dataclass
class _Job:
    """One pass over an import's file: what both databases' loaders need."""

    run: _Run
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
        """In the import's transaction, after the load: the report, the counters, and the upload's removal."""
        state = self.run.state
        await imports_staging.store_errors(conn, st, self.run.import_id, self.load.max_errors)
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
            raise _Superseded()
        await session.execute(delete(ImportChunk).where(ImportChunk.import_id == self.run.import_id))


async def _execute(run: _Run, row: Import, binary: IO[bytes], *, conflict_safe: bool) -> None:
    options = row.options or {}
    sample = binary.read(SAMPLE_BYTES)
    complete = len(sample) < SAMPLE_BYTES or not binary.read(1)
    binary.seek(0)
    dialect, plan = inspect_sample(
        sample,
        complete=complete,
        column_map=check_column_map(options.get("columnMap")),
        source_field="file",
    )
    state = run.state
    state.processed = state.inserted = state.updated = state.skipped = state.failed = 0
    state.phase = "reading"
    state.total = max(0, _count_lines(binary) - 1)
    await run.report(force=True)
    status = options.get("subscriptionStatus")
    stats = ParseStats()
    text_file = open_text(binary, dialect)
    job = _Job(
        run=run,
        options=options,
        dialect=dialect,
        rows=parse_rows(text_file, dialect, plan, stats),
        stats=stats,
        load=imports_load.LoadOptions(
            import_id=run.import_id,
            mode=row.mode,
            list_ids=list(row.list_ids or []),
            subscription_status=SubscriptionStatus(status) if status else None,
            now=utcnow(),
            max_errors=MAX_STORED_ERRORS,
            chunk_rows=LOAD_CHUNK_ROWS,
            conflict_safe=conflict_safe,
        ),
    )
    try:
        if run.db.dialect == "postgresql":
            await _stage_and_load_postgresql(job)
        else:
            await _stage_and_load_sqlite(job)
    finally:
        # The caller owns `binary` (a retry reads it again): the text layer must not close it.
        text_file.detach()
    state.status = ImportStatus.FINISHED
    state.phase = ""
    await run.publish()


async def _stage_and_load_sqlite(job: _Job) -> None:
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
            state.skipped += await imports_staging.mark_suppressed(conn, st)
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


async def _stage_and_load_postgresql(job: _Job) -> None:
    """Chunks are parsed and staged on a connection of their own while the import's transaction loads the
    chunks already checked: the parse, the COPY and the load overlap instead of taking turns."""
    run, state = job.run, job.run.state
    # Named by attempt too: a run that lost its lease may still be winding down with its own table.
    st = imports_staging.staging_table(imports_pg.staging_name(run.import_id, run.attempt), shared=True)
    async with run.db.engine.begin() as conn:
        await imports_pg.sweep_staging(conn)
        await imports_staging.create_staging(conn, st)
    try:
        async with run.db.transaction() as session:
            conn = await session.connection()
            # Committed chunks are read as the feeder commits them, so each statement needs a fresh snapshot,
            # whatever the database's default isolation: it must be the transaction's first statement.
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            # Each load's checks and joins hash a whole range of staged rows; keep that in memory.
            await conn.execute(text(f"SET LOCAL work_mem = '{imports_load.WORK_MEM}'"))
            # A list deleted since the import was accepted fails it now with that reason; one deleted from
            # here on waits for the import to end, then takes its new subscriptions with it.
            await require_lists(session, job.load.list_ids, hold=True)
            duplicates = suppressed = existing_skipped = 0
            chunks = imports_pg.staged_chunks(run.db, st, job.rows, job.parsed)
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
