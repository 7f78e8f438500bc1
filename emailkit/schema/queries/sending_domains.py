"""Queries of sending domains: `sendingDomains` and `sendingDomain` (ADMIN keys)."""

from __future__ import annotations

import strawberry

from emailkit.domain.sending_domains import service
from emailkit.schema.context import Info
from emailkit.schema.permissions import admin_field
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.sending_domains import SendingDomainType


@strawberry.type
class Query:
    @admin_field(description="This workspace's sending domains, oldest first.")
    async def sending_domains(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[SendingDomainType]:
        return await info.context.connection(
            lambda s, n, a: service.find_domains(s, first=n, after=a),
            SendingDomainType.from_model,
            first,
            after,
        )

    @admin_field(description="One sending domain of this workspace; null when there is none with this id.")
    async def sending_domain(self, info: Info, id: strawberry.ID) -> SendingDomainType | None:
        pk = decode_id_or_none(id, "SendingDomain")
        if pk is None:
            return None
        async with info.context.loaders.session() as session:
            row = await service.find_domain(session, pk)
            return None if row is None else SendingDomainType.from_model(row)
