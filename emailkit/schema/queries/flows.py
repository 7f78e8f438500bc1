"""Queries: `flows` and `flow(id)`."""

from __future__ import annotations

import strawberry

from emailkit.domain.automation import flows
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.flows import FlowType


@strawberry.type
class Query:
    @strawberry.field(description="Automation flows, oldest first.")
    async def flows(self, info: Info, first: int = 50, after: str | None = None) -> Connection[FlowType]:
        return await info.context.connection(
            lambda s, n, a: flows.find_flows(s, first=n, after=a), FlowType.from_model, first, after
        )

    @strawberry.field(description="One flow; null when there is none with this id.")
    async def flow(self, info: Info, id: strawberry.ID) -> FlowType | None:
        return await load_one(
            info.context.loaders.flow_by_id, decode_id_or_none(id, "Flow"), FlowType.from_model
        )
