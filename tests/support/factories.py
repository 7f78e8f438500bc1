"""Rows the tests need as a starting point, written straight through the domain (no HTTP on the way)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import OptIn
from emailkit.domain import apikeys, workspaces
from emailkit.domain.audience import lists


async def make_key(db: Database, role: Role = Role.ADMIN, name: str = "test") -> str:
    """A new API key with `role` in the workspace in scope (or an instance key, for OWNER); returns the raw key
    to send as a bearer token."""
    instance = role is Role.OWNER
    # An instance key belongs to no workspace: written for all of them (row-level security would refuse it
    # inside one).
    with all_workspaces() if instance else nullcontext():
        async with db.transaction() as session:
            _, raw = await apikeys.create_api_key(session, name, role, instance=instance)
    return raw


async def make_workspace(db: Database, slug: str, **settings: Any) -> int:
    """A workspace made through the domain; returns its database id."""
    with all_workspaces():
        async with db.transaction() as session:
            row = await workspaces.create_workspace(
                session, workspaces.WorkspaceInput(name=slug.title(), slug=slug, **settings)
            )
            return row.id


async def make_workspace_key(db: Database, workspace_id: int, role: Role = Role.ADMIN) -> str:
    """A key of workspace `workspace_id`."""
    with workspace_scope(workspace_id):
        return await make_key(db, role, f"{role.value.lower()} of {workspace_id}")


async def insert_list(db: Database, name: str = "Newsletter", optin: OptIn = OptIn.SINGLE) -> int:
    """A mailing list made through the domain; returns its database id."""
    async with db.transaction() as s:
        return (await lists.create_list(s, lists.ListInput(name=name, optin=optin))).id
