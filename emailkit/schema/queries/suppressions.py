"""Query: `suppressions`, the suppression list."""

from __future__ import annotations

import strawberry

from emailkit.domain.audience import suppressions
from emailkit.schema.context import Info
from emailkit.schema.relay import Connection
from emailkit.schema.types.suppressions import SuppressionType


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
