"""The MailingList type."""

from __future__ import annotations

from datetime import datetime

import strawberry

from emailkit.db.tables.audience import MailingList as ListRow
from emailkit.schema.context import Info
from emailkit.schema.enums import OptIn, Visibility
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Node, to_global_id
from emailkit.schema.types.templates import TemplateType


@strawberry.type(name="MailingList")
class MailingListType(Node):
    pk: strawberry.Private[int]
    name: str
    description: str
    optin: OptIn
    visibility: Visibility
    tags: list[str]
    default_timezone: str | None = strawberry.field(
        description="The IANA timezone of its subscribers who have no valid timezone attribute; null: the "
        "server's default (EMAILKIT_DEFAULT_TIMEZONE)."
    )
    sender_id: strawberry.ID | None = strawberry.field(
        description="The sender of its campaigns that name none; null: the default sender."
    )
    created_at: datetime
    updated_at: datetime

    optin_template_pk: strawberry.Private[int | None]

    @strawberry.field(description="The TRANSACTIONAL template of the double opt-in mail; null = built-in.")
    async def optin_template(self, info: Info) -> TemplateType | None:
        return await load_one(
            info.context.loaders.template_by_id, self.optin_template_pk, TemplateType.from_model
        )

    @strawberry.field(description="Subscribers whose subscription is not UNSUBSCRIBED.")
    async def subscriber_count(self, info: Info) -> int:
        return await info.context.loaders.list_subscriber_count.load(self.pk)

    @classmethod
    def from_model(cls, row: ListRow) -> MailingListType:
        return cls(
            id=to_global_id("MailingList", row.id),
            pk=row.id,
            name=row.name,
            description=row.description,
            optin=row.optin,
            visibility=row.visibility,
            tags=list(row.tags),
            optin_template_pk=row.optin_template_id,
            default_timezone=row.default_timezone,
            sender_id=to_global_id("Sender", row.sender_id) if row.sender_id is not None else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
