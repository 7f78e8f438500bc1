"""CSV imports: the importSubscribers mutation, import status queries and live importProgress."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.db.tables.audience import ImportMode, ImportStatus
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.progress import ImportState, progress_channel
from emailkit.domain.errors import DomainError
from emailkit.schema.context import Info
from emailkit.schema.enums import ErrorCode, SubscriptionStatus
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.lists import MailingListType
from emailkit.schema.live import live_updates
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import Connection, Node, decode_id_or_none, decode_ids, to_global_id

strawberry.enum(ImportStatus, name="ImportStatus")
strawberry.enum(
    ImportMode,
    name="ImportMode",
    description=(
        "UPSERT adds new addresses and updates existing subscribers (non-empty name, attributes merged, "
        "the file winning); SKIP_EXISTING adds new addresses and leaves existing subscribers and their "
        "subscriptions untouched."
    ),
)

READ_CHUNK = 1 << 20


@strawberry.type(name="ImportRowError", description="A row of the file that was not imported, and why.")
class ImportRowErrorType:
    row: int = strawberry.field(description="Row number as a spreadsheet shows it (the header is row 1).")
    message: str


@strawberry.type(name="Import", description="A CSV import of subscribers.")
class ImportType(Node):
    pk: strawberry.Private[int]
    list_pks: strawberry.Private[list[int]]
    status: ImportStatus
    mode: ImportMode
    source_name: str
    source_bytes: int = strawberry.field(description="Size of the file in bytes.")
    total: int = strawberry.field(
        description="Data rows in the file (estimated from its line count until parsing is done)."
    )
    processed: int = strawberry.field(description="Rows parsed and checked so far.")
    inserted: int
    updated: int
    skipped: int = strawberry.field(
        description="Valid rows not imported: suppressed addresses, and existing ones with SKIP_EXISTING."
    )
    failed: int = strawberry.field(description="Invalid rows (see errors).")
    error: str | None = strawberry.field(description="Why the import FAILED; nothing was imported then.")
    encoding: str | None = strawberry.field(description="The file's detected encoding, once parsed.")
    delimiter: str | None = strawberry.field(description="The file's detected delimiter, once parsed.")
    column_map: JSON
    subscription_status: SubscriptionStatus | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @strawberry.field(description="The lists imported subscribers are subscribed to.")
    async def lists(self, info: Info) -> list[MailingListType]:
        rows = await info.context.loaders.list_by_id.load_many(self.list_pks)
        return [MailingListType.from_model(r) for r in rows if r is not None]

    @strawberry.field(
        description=(
            "Rows that were not imported (failed or skipped as suppressed), in row order; at most the "
            f"first {imports.MAX_STORED_ERRORS} are kept. Page through them with `after`."
        )
    )
    async def errors(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[ImportRowErrorType]:
        pk = self.pk
        return await info.context.connection(
            lambda s, n, a: imports.import_errors_page(s, pk, first=n, after_row=a),
            lambda r: ImportRowErrorType(row=r.row, message=r.message),
            first,
            after,
        )

    @classmethod
    def from_model(cls, row: ImportRow) -> ImportType:
        options = row.options or {}
        status = options.get("subscriptionStatus")
        return cls(
            id=to_global_id("Import", row.id),
            pk=row.id,
            list_pks=list(row.list_ids or []),
            status=row.status,
            mode=row.mode,
            source_name=row.source_name,
            source_bytes=row.source_bytes,
            total=row.total,
            processed=row.processed,
            inserted=row.inserted,
            updated=row.updated,
            skipped=row.skipped,
            failed=row.failed,
            error=row.error,
            encoding=options.get("encoding"),
            delimiter=options.get("delimiter"),
            column_map=JSON(dict(options.get("columnMap") or {})),
            subscription_status=SubscriptionStatus(status) if status else None,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


@strawberry.type(description="Live counters of an import (see Import for their meaning).")
class ImportProgress:
    status: ImportStatus
    total: int
    processed: int
    inserted: int
    updated: int
    skipped: int
    failed: int
    error: str | None

    @classmethod
    def of(cls, state: ImportState) -> ImportProgress:
        return cls(status=state.status, error=state.error, **state.counters())


@strawberry.input
class ImportSubscribersInput:
    csv: str | None = strawberry.field(default=None, description="The CSV as text (small files).")
    file: Upload | None = strawberry.field(
        default=None, description="The CSV as a multipart upload (give exactly one of csv and file)."
    )
    list_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Lists to subscribe the imported subscribers to."
    )
    mode: ImportMode = ImportMode.UPSERT
    subscription_status: SubscriptionStatus | None = strawberry.field(
        default=None,
        description=(
            "Status of new subscriptions; default UNCONFIRMED on DOUBLE opt-in lists, else CONFIRMED. With "
            "UPSERT an explicit CONFIRMED also confirms UNCONFIRMED subscriptions and UNSUBSCRIBED records "
            "opt-outs; an import never re-subscribes anyone who unsubscribed."
        ),
    )
    column_map: JSON | None = strawberry.field(
        default=None,
        description=(
            'Header -> target: "email", "name", "-" (ignore) or an attribute path such as "city" or '
            '"address.city". Unmapped columns: email/e-mail and name/full name by header, every other '
            "column an attribute named by its header (dots nest). Numbers and true/false are typed; "
            "empty cells are left out."
        ),
    )


@strawberry.type
class ImportSubscribersPayload:
    import_: ImportType | None = strawberry.field(name="import")
    user_errors: list[UserError]


async def _upload_chunks(upload: object) -> AsyncIterator[bytes]:
    read = getattr(upload, "read", None)
    if read is None:
        raise DomainError.single(ErrorCode.INVALID_INPUT, "file must be an uploaded file", "file")
    while True:
        data = await read(READ_CHUNK)
        if not data:
            return
        yield data


async def _text_chunks(text: str) -> AsyncIterator[bytes]:
    yield text.encode("utf-8")


@strawberry.type
class Query:
    @strawberry.field(name="import", description="An import by ID; null when it does not exist.")
    async def import_(self, info: Info, id: strawberry.ID) -> ImportType | None:
        pk = decode_id_or_none(id, "Import")
        if pk is None:
            return None
        async with info.context.loaders.session() as session:
            row = await session.get(ImportRow, pk)
        return ImportType.from_model(row) if row is not None else None

    @strawberry.field(description="Imports, newest first.")
    async def imports(self, info: Info, first: int = 20, after: str | None = None) -> Connection[ImportType]:
        return await info.context.connection(
            lambda s, n, a: imports.find_imports(s, first=n, after=a), ImportType.from_model, first, after
        )


@strawberry.type
class Mutation:
    @write_mutation(
        description=(
            "Start importing subscribers from a CSV (text or upload) in the background; follow it with "
            "`import(id)` or `subscription { importProgress(id) }`. Delimiter (comma, semicolon, tab, pipe) "
            "and encoding (UTF-8 with or without BOM, UTF-16, Windows-1252/Latin-1) are detected. The import "
            "is all or nothing: it FINISHES with every valid row imported, or FAILS having changed nothing."
        )
    )
    async def import_subscribers(self, info: Info, input: ImportSubscribersInput) -> ImportSubscribersPayload:
        if (input.csv is None) == (input.file is None):
            error = UserError(
                field=None, message="Give exactly one of csv and file", code=ErrorCode.INVALID_INPUT
            )
            return ImportSubscribersPayload(import_=None, user_errors=[error])
        if input.file is not None:
            name = str(getattr(input.file, "filename", None) or "upload.csv")
            chunks = _upload_chunks(input.file)
            field, limit = "file", None
        else:
            assert input.csv is not None
            name, chunks, field, limit = "csv", _text_chunks(input.csv), "csv", imports.CSV_TEXT_MAX_BYTES
        mode, status, column_map = input.mode, input.subscription_status, input.column_map
        out = await mutate(
            info,
            # NUL in a CSV is reported per row by the import, like any other bad cell.
            text_exempt=("csv",),
            work=lambda s: imports.create_import(
                s,
                imports.ImportRequest(
                    source_name=name,
                    list_ids=decode_ids(input.list_ids or [], "MailingList", "listIds"),
                    mode=mode,
                    subscription_status=status,
                    column_map=column_map,
                    source_field=field,
                ),
                chunks,
                max_bytes=limit,
            ),
            # The upload streams through once; a refused transaction answers CONCURRENT_CHANGE instead.
            rerun=False,
        )
        if out.value is None:
            return ImportSubscribersPayload(import_=None, user_errors=out.errors)
        runtime = info.context.runtime
        await imports.enqueue_import(runtime.jobs, runtime.db, out.value.id)
        async with runtime.db.session() as session:
            row = await session.get(ImportRow, out.value.id)
        assert row is not None
        return ImportSubscribersPayload(import_=ImportType.from_model(row), user_errors=[])


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Live counters of an import, ending once it FINISHED or FAILED.")
    async def import_progress(self, info: Info, id: strawberry.ID) -> AsyncGenerator[ImportProgress, None]:
        pk = decode_id_or_none(id, "Import")
        if pk is None:
            raise GraphQLError("Not an Import ID", extensions={"code": "INVALID_ID"})
        runtime = info.context.runtime
        # Subscribe before reading the current state so no update in between is missed.
        async with live_updates(runtime, progress_channel(pk)) as updates:
            async with runtime.db.session() as session:
                row = await session.get(ImportRow, pk)
            if row is None:
                raise GraphQLError("Import not found", extensions={"code": "NOT_FOUND"})
            state = ImportState.of(row)
            yield ImportProgress.of(state)
            if state.final:
                return
            async for message in updates:
                state = ImportState.from_message(message)
                yield ImportProgress.of(state)
                if state.final:
                    return


async def import_node(info: Info, pk: int) -> Node | None:
    async with info.context.loaders.session() as session:
        row = await session.get(ImportRow, pk)
    return ImportType.from_model(row) if row is not None else None
