"""Mutations on the suppression list: addSuppression, removeSuppression."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.audience import Suppression as SuppressionRow
from emailkit.db.tables.audience import SuppressionReason
from emailkit.domain.audience import suppressions
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.suppressions import SuppressionType


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
