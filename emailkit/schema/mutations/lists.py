"""Mutations: createList, updateList, deleteList."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.audience import MailingList as ListRow
from emailkit.domain.audience import lists
from emailkit.schema.context import Info
from emailkit.schema.enums import OptIn, Visibility
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.lists import MailingListType
from emailkit.schema.types.senders import sender_pk


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
    default_timezone: str | None = strawberry.field(
        default=None,
        description="The IANA timezone (e.g. Europe/Paris) of its subscribers who have no valid timezone "
        "attribute; default: EMAILKIT_DEFAULT_TIMEZONE. An unknown name is INVALID_TIMEZONE.",
    )
    sender_id: strawberry.ID | None = strawberry.field(
        default=None, description="The sender of its campaigns that name none; default: the default sender."
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
    default_timezone: str | None = strawberry.field(
        default=None,
        description='The IANA timezone of its subscribers without a valid timezone attribute; "" removes it '
        "(EMAILKIT_DEFAULT_TIMEZONE applies). An unknown name is INVALID_TIMEZONE.",
    )
    sender_id: strawberry.ID | None = strawberry.field(
        default=None, description='The sender of its campaigns that name none; "" returns to the default.'
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


def _list_input(input: CreateListInput | UpdateListInput) -> lists.ListInput:
    return lists.ListInput(
        name=input.name,
        description=input.description,
        optin=input.optin,
        visibility=input.visibility,
        tags=input.tags,
        optin_template_id=_template_pk(input.optin_template_id),
        default_timezone=input.default_timezone,
        sender_id=sender_pk(input.sender_id),
    )


def _template_pk(value: str | None) -> int | None:
    if value is None:
        return None
    return 0 if value == "" else decode_id(value, "Template", "optinTemplateId")


@strawberry.type
class Mutation:
    @write_mutation
    async def create_list(self, info: Info, input: CreateListInput) -> MailingListPayload:
        out = await mutate(
            info,
            lambda s: lists.create_list(
                s,
                _list_input(input),
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
                _list_input(input),
            ),
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_list(self, info: Info, input: DeleteListInput) -> DeletePayload:
        out = await mutate(info, lambda s: lists.delete_list(s, decode_id(input.id, "MailingList")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
