"""Subscriber imports from CSV: accepted by the API, run by a background job, all or nothing.

`create_import` validates the request, checks the file's header and stores the file in the database (so a
worker on any machine can read it); the job `run_import` then parses it as a stream into a staging table,
checks it (repeats within the file, suppressions) and loads it in one transaction: it either finishes with every
valid row imported or fails having written nothing. On PostgreSQL the parse and staging run beside the load
(`postgres`; SQLite's path is `sqlite`). Progress is saved on the import row and published live (`progress`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

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
from emailkit.domain.audience.imports import sqlite as imports_sqlite
from emailkit.domain.audience.imports.columns import check_column_map
from emailkit.domain.audience.imports.csvfile import (
    SAMPLE_BYTES,
    Dialect,
    count_lines,
    inspect_sample,
    open_text,
)
from emailkit.domain.audience.imports.progress import ImportState, ProgressCallback
from emailkit.domain.audience.imports.rows import ParseStats, parse_rows
from emailkit.domain.audience.imports.run import Job, Run, Superseded, claim, finish_failed
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
    # Whether the people it subscribes enter the lists' SUBSCRIBED flows (a migration of an old list may not).
    trigger_flows: bool = True


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
        options={
            "columnMap": column_map,
            "subscriptionStatus": status.value if status else None,
            "triggerFlows": request.trigger_flows,
        },
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
        await session.execute(
            insert(ImportChunk).values(import_id=row.id, workspace_id=row.workspace_id, seq=seq, data=data)
        )
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
        await finish_failed(db, import_id, None, "No job queue is configured to run imports", None)
        return
    try:
        await jobs.enqueue(IMPORT_JOB, {"import_id": import_id})
    except Exception as exc:
        log.exception("import %s could not be queued", import_id)
        await finish_failed(db, import_id, None, f"The import could not be queued: {exc}", None)


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
    row = await claim(db, import_id)
    if row is None:
        async with db.session() as session:
            return await session.get(Import, import_id)
    run = Run(
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
    except Superseded:
        log.info("import %s: a newer run took over", import_id)
        return None
    except BaseException as exc:
        reason = _reason(exc)
        if not isinstance(exc, DomainError):
            log.exception("import %s failed", import_id)
        with contextlib.suppress(Exception):
            await finish_failed(db, import_id, run.attempt, reason, run)
        if not isinstance(exc, Exception):
            raise
    async with db.session() as session:
        return await session.get(Import, import_id)


async def _execute_until_settled(run: Run, row: Import, binary: IO[bytes]) -> None:
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
            await transactions.pause_before_rerun(attempt)
        binary.seek(0)
    raise transactions.ConcurrentChange()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return str(exc)
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [""])[0][:500]
    return f"{type(orig).__name__}: {first_line}" if first_line else type(orig).__name__


async def _execute(run: Run, row: Import, binary: IO[bytes], *, conflict_safe: bool) -> None:
    """One pass over the file: its header and line count, then staged and loaded on the database's path."""
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
    state.total = max(0, count_lines(binary) - 1)
    await run.report(force=True)
    status = options.get("subscriptionStatus")
    stats = ParseStats()
    text_file = open_text(binary, dialect)
    job = Job(
        run=run,
        options=options,
        dialect=dialect,
        rows=parse_rows(text_file, dialect, plan, stats),
        stats=stats,
        load=imports_load.LoadOptions(
            import_id=run.import_id,
            workspace_id=row.workspace_id,
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
            await imports_pg.stage_and_load(job)
        else:
            await imports_sqlite.stage_and_load(job)
    finally:
        # The caller owns `binary` (a retry reads it again): the text layer must not close it.
        text_file.detach()
    state.status = ImportStatus.FINISHED
    state.phase = ""
    await run.publish()
