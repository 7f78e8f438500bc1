"""Query: `apiKeys` (ADMIN keys only)."""

from __future__ import annotations

import strawberry

from emailkit.domain import apikeys
from emailkit.schema.context import Info
from emailkit.schema.permissions import admin_field
from emailkit.schema.relay import Connection
from emailkit.schema.types.apikeys import ApiKeyType


@strawberry.type
class Query:
    @admin_field(description="All API keys, revoked ones included, oldest first.")
    async def api_keys(self, info: Info, first: int = 50, after: str | None = None) -> Connection[ApiKeyType]:
        return await info.context.connection(
            lambda s, n, a: apikeys.find_api_keys(s, first=n, after=a),
            ApiKeyType.from_model,
            first,
            after,
        )
