"""`viewer`: the calling API key."""

from __future__ import annotations

import strawberry

from emailkit.schema.context import Info
from emailkit.schema.enums import Role


@strawberry.type(description="The API key making this request.")
class Viewer:
    name: str
    role: Role


@strawberry.type
class Query:
    @strawberry.field
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        assert principal is not None  # the HTTP layer refuses unauthenticated operations
        return Viewer(name=principal.name, role=principal.role)
