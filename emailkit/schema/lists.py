"""Mailing lists: type, queries and mutations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from emailkit.db.tables.audience import MailingList as ListRow
from emailkit.domain.audience import lists
from emailkit.schema.context import Info
from emailkit.schema.enums import OptIn, Visibility
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import Connection, Node, decode_id, decode_id_or_none, to_global_id

if TYPE_CHECKING:
    from emailkit.schema.templates import TemplateType

TemplateRef = Annotated["TemplateType", strawberry.lazy("emailkit.schema.templates")]


@strawberry.type(name="MailingList")
class MailingListType(Node):
    pk: strawberry.Private[int]
    name: str
    description: str
    optin: OptIn
    visibility: Visibility
    tags: list[str]
    created_at: datetime
    updated_at: datetime

    optin_template_pk: strawberry.Private[int | None]

    @strawberry.field(description="The TRANSACTIONAL template of the double opt-in mail; null = built-in.")
    async def optin_template(self, info: Info) -> TemplateRef | None:
        from emailkit.schema.templates import TemplateType

        if self.optin_template_pk is None:
            return None
        row = await info.context.loaders.template_by_id.load(self.optin_template_pk)
        return TemplateType.from_model(row) if row is not None else None

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
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.input
class CreateListInput:
    name: str
    description: str | None = None
    optin: OptIn | None = None
    visibility: Visibility | None = None
    tags: list[str] | None = None
    optin_template_id: strawberry.ID | None = strawberry.field(
        default=None, description="A TRANSACTIONAL template for the double opt-in mail (default: built-in)."
    )


@strawberry.input
class UpdateListInput:
    id: strawberry.ID
    name: str | None = None
    description: str | None = None
    optin: OptIn | None = None
    visibility: Visibility | None = None
    tags: list[str] | None = None
    optin_template_id: strawberry.ID | None = strawberry.field(
        default=None,
        description='A TRANSACTIONAL template for the opt-in mail; "" returns to the built-in one.',
    )


@strawberry.input
class DeleteListInput:
    id: strawberry.ID


@strawberry.type
class MailingListPayload:
    mailing_list: MailingListType | None = strawberry.field(name="list")
    user_errors: list[UserError]


def _payload(row: ListRow | None, errors: list[UserError]) -> MailingListPayload:
    return MailingListPayload(
        mailing_list=MailingListType.from_model(row) if row is not None else None, user_errors=errors
    )


def _template_pk(value: str | None) -> int | None:
    if value is None:
        return None
    return 0 if value == "" else decode_id(value, "Template", "optinTemplateId")


@strawberry.type
class Query:
    @strawberry.field(description="Mailing lists, oldest first; `search` matches name and description.")
    async def lists(
        self, info: Info, first: int = 50, after: str | None = None, search: str | None = None
    ) -> Connection[MailingListType]:
        return await info.context.connection(
            lambda s, n, a: lists.find_lists(s, first=n, after=a, search=search),
            MailingListType.from_model,
            first,
            after,
        )

    @strawberry.field(name="list")
    async def mailing_list(self, info: Info, id: strawberry.ID) -> MailingListType | None:
        pk = decode_id_or_none(id, "MailingList")
        row = await info.context.loaders.list_by_id.load(pk) if pk is not None else None
        return MailingListType.from_model(row) if row is not None else None


@strawberry.type
class Mutation:
    @write_mutation
    async def create_list(self, info: Info, input: CreateListInput) -> MailingListPayload:
        out = await mutate(
            info,
            lambda s: lists.create_list(
                s,
                lists.ListInput(
                    name=input.name,
                    description=input.description,
                    optin=input.optin,
                    visibility=input.visibility,
                    tags=input.tags,
                    optin_template_id=_template_pk(input.optin_template_id),
                ),
            ),
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def update_list(self, info: Info, input: UpdateListInput) -> MailingListPayload:
        out = await mutate(
            info,
            lambda s: lists.update_list(
                s,
                decode_id(input.id, "MailingList"),
                lists.ListInput(
                    name=input.name,
                    description=input.description,
                    optin=input.optin,
                    visibility=input.visibility,
                    tags=input.tags,
                    optin_template_id=_template_pk(input.optin_template_id),
                ),
            ),
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_list(self, info: Info, input: DeleteListInput) -> DeletePayload:
        out = await mutate(info, lambda s: lists.delete_list(s, decode_id(input.id, "MailingList")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
