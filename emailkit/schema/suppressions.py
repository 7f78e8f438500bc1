"""The suppression list: type, query and mutations."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from emailkit.db.tables.audience import Suppression as SuppressionRow
from emailkit.db.tables.audience import SuppressionReason
from emailkit.domain.audience import suppressions
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.refs import campaign_by_pk
from emailkit.schema.relay import Connection, Node, decode_id, to_global_id

if TYPE_CHECKING:
    from emailkit.schema.campaigns import CampaignType

strawberry.enum(SuppressionReason, name="SuppressionReason")


@strawberry.type(
    name="Suppression", description="An address that is never sent to, by any campaign or message."
)
class SuppressionType(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    email: str | None = strawberry.field(description="Null once the address was erased; the hash remains.")
    email_hash: str = strawberry.field(description="sha256 (hex) of the lower-cased address.")
    reason: SuppressionReason
    detail: str | None = strawberry.field(description="The provider's diagnostic, or a note.")
    source: str = strawberry.field(description="The provider that reported it, or `api`.")
    created_at: datetime

    @strawberry.field(description="The campaign whose message caused it, if any.")
    async def campaign(
        self, info: Info
    ) -> Annotated[CampaignType, strawberry.lazy("emailkit.schema.campaigns")] | None:
        return await campaign_by_pk(info, self.campaign_pk)

    @classmethod
    def from_model(cls, row: SuppressionRow) -> SuppressionType:
        return cls(
            id=to_global_id("Suppression", row.id),
            pk=row.id,
            campaign_pk=row.campaign_id,
            email=row.email,
            email_hash=row.email_hash,
            reason=row.reason,
            detail=row.detail,
            source=row.source,
            created_at=row.created_at,
        )


@strawberry.input
class AddSuppressionInput:
    email: str
    reason: SuppressionReason | None = strawberry.field(default=None, description="Default MANUAL.")
    detail: str | None = None


@strawberry.input(description="Give either id or email.")
class RemoveSuppressionInput:
    id: strawberry.ID | None = None
    email: str | None = None


@strawberry.type
class SuppressionPayload:
    suppression: SuppressionType | None
    user_errors: list[UserError]


def _payload(row: SuppressionRow | None, errors: list[UserError]) -> SuppressionPayload:
    return SuppressionPayload(
        suppression=SuppressionType.from_model(row) if row is not None else None, user_errors=errors
    )


async def suppression_node(info: Info, pk: int) -> SuppressionType | None:
    async with info.context.loaders.session() as session:
        row = (await suppressions.suppressions_by_ids(session, [pk])).get(pk)
    return SuppressionType.from_model(row) if row is not None else None


@strawberry.type
class Query:
    @strawberry.field(
        description="Suppressed addresses, newest first; `search` matches part of an address (or a whole erased one)."
    )
    async def suppressions(
        self, info: Info, first: int = 50, after: str | None = None, search: str | None = None
    ) -> Connection[SuppressionType]:
        return await info.context.connection(
            lambda s, n, a: suppressions.find_suppressions(s, first=n, after=a, search=search),
            SuppressionType.from_model,
            first,
            after,
        )


@strawberry.type
class Mutation:
    @write_mutation(description="Never send to this address again (until the entry is removed).")
    async def add_suppression(self, info: Info, input: AddSuppressionInput) -> SuppressionPayload:
        out = await mutate(
            info,
            lambda s: suppressions.add_suppression(
                s, input.email, input.reason or SuppressionReason.MANUAL, detail=input.detail
            ),
        )
        return _payload(out.value, out.errors)

    @write_mutation(
        description=(
            "Allow sending to the address again. A subscriber blocklisted by a bounce or complaint stays "
            "BLOCKLISTED until updated."
        )
    )
    async def remove_suppression(self, info: Info, input: RemoveSuppressionInput) -> SuppressionPayload:
        out = await mutate(
            info,
            lambda s: suppressions.remove_suppression(
                s,
                suppression_id=decode_id(input.id, "Suppression") if input.id is not None else None,
                email=input.email,
            ),
        )
        return _payload(out.value, out.errors)
