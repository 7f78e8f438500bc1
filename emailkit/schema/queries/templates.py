"""Queries: `templates` and `template(id)`."""

from __future__ import annotations

import strawberry

from emailkit.domain.content import templates
from emailkit.schema.context import Info
from emailkit.schema.enums import TemplateKind
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.templates import TemplateType


@strawberry.type
class Query:
    @strawberry.field(description="Templates, oldest first, optionally of one kind.")
    async def templates(
        self, info: Info, first: int = 50, after: str | None = None, kind: TemplateKind | None = None
    ) -> Connection[TemplateType]:
        return await info.context.connection(
            lambda s, n, a: templates.find_templates(s, first=n, after=a, kind=kind),
            TemplateType.from_model,
            first,
            after,
        )

    @strawberry.field
    async def template(self, info: Info, id: strawberry.ID) -> TemplateType | None:
        return await load_one(
            info.context.loaders.template_by_id, decode_id_or_none(id, "Template"), TemplateType.from_model
        )
