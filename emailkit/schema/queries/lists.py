"""Queries: `lists` and `list(id)`."""

from __future__ import annotations

import strawberry

from emailkit.domain.audience import lists
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.lists import MailingListType


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
        return await load_one(
            info.context.loaders.list_by_id, decode_id_or_none(id, "MailingList"), MailingListType.from_model
        )
