"""Queries: `workspaces` (instance keys) and `workspace` (the one the request acts in)."""

from __future__ import annotations

import strawberry

from emailkit.domain import workspaces
from emailkit.schema.context import Info
from emailkit.schema.permissions import owner_field
from emailkit.schema.relay import Connection
from emailkit.schema.types.workspaces import WorkspaceType


@strawberry.type
class Query:
    @owner_field(
        description="Every workspace, archived ones included, oldest first. Instance (OWNER) keys only."
    )
    async def workspaces(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[WorkspaceType]:
        return await info.context.connection(
            lambda s, n, a: workspaces.find_workspaces(s, first=n, after=a),
            WorkspaceType.from_model,
            first,
            after,
        )

    @strawberry.field(
        description=(
            "The workspace this request acts in: the key's own, or the one an instance key names in "
            "X-Emailkit-Workspace. Null for an instance key that names none."
        )
    )
    async def workspace(self, info: Info) -> WorkspaceType | None:
        workspace_id = info.context.workspace_id
        if workspace_id is None:
            return None
        async with info.context.loaders.session() as session:
            return WorkspaceType.from_model(await workspaces.get_workspace(session, workspace_id))
