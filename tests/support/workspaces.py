"""A second workspace for the audience's isolation tests: made, given a key, archived."""

from __future__ import annotations

from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from tests.support.factories import make_key


async def add_workspace(db: Database, slug: str) -> int:
    """A new ACTIVE workspace; returns its id."""
    with all_workspaces():
        async with db.transaction() as session:
            row = Workspace(name=slug.title(), slug=slug)
            session.add(row)
            await session.flush()
            return row.id


async def key_of(db: Database, workspace_id: int, role: Role = Role.ADMIN) -> str:
    """A raw API key of that workspace."""
    with workspace_scope(workspace_id):
        return await make_key(db, role, f"key of {workspace_id}")


async def archive(db: Database, workspace_id: int) -> None:
    with all_workspaces():
        async with db.transaction() as session:
            await session.execute(
                update(Workspace)
                .where(Workspace.id == workspace_id)
                .values(status=WorkspaceStatus.ARCHIVED, archived_at=utcnow())
            )
