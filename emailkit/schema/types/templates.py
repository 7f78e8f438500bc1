"""The Template type."""

from __future__ import annotations

from datetime import datetime

import strawberry

from emailkit.db.tables.content import Template as TemplateRow
from emailkit.schema.enums import ContentFormat, TemplateKind
from emailkit.schema.relay import Node, to_global_id


@strawberry.type(
    name="Template",
    description="An MJML or HTML body and a subject, both Jinja2 templates rendered in a sandbox.",
)
class TemplateType(Node):
    pk: strawberry.Private[int]
    name: str
    kind: TemplateKind
    format: ContentFormat
    subject: str
    body: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, row: TemplateRow) -> TemplateType:
        return cls(
            id=to_global_id("Template", row.id),
            pk=row.id,
            name=row.name,
            kind=row.kind,
            format=row.format,
            subject=row.subject,
            body=row.body,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
