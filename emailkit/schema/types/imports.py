"""The Import type (a CSV import of subscribers), its row errors, and its live ImportProgress."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.db.tables.audience import ImportMode, ImportStatus
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.schema.context import Info
from emailkit.schema.enums import SubscriptionStatus
from emailkit.schema.relay import Connection, Node, to_global_id
from emailkit.schema.types.lists import MailingListType

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
