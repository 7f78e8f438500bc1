"""Mutation: importSubscribers, a CSV (text or upload) imported in the background."""

from __future__ import annotations

from collections.abc import AsyncIterator

import strawberry
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.db.tables.audience import ImportMode
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.errors import DomainError
from emailkit.schema.context import Info
from emailkit.schema.enums import ErrorCode, SubscriptionStatus
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_ids
from emailkit.schema.types.imports import ImportType

READ_CHUNK = 1 << 20


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
    trigger_flows: bool = strawberry.field(
        default=True,
        description="Whether the people it subscribes enter the lists' SUBSCRIBED flows (false: a quiet migration).",
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
                    trigger_flows=input.trigger_flows,
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
