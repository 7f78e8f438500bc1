"""Queries: `import(id)` and `imports`."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.domain.audience.imports import service as imports
from emailkit.schema.context import Info
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.imports import ImportType


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
