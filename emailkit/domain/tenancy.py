"""Finding the workspace of a row named by id alone: a job's message, a signed link, a provider's event.

Such work starts without a workspace (a message carries ids only), looks its row's workspace up across all
workspaces, and then runs in that workspace's scope like an API request does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.tenancy import InWorkspace


async def workspace_of(db: Database, table: type[InWorkspace], row_id: int) -> int | None:
    """The workspace of `table`'s row `row_id`, or None when there is no such row."""
    with all_workspaces():
        async with db.read_session() as session:
            found = await session.execute(select(table.workspace_id).where(table.id == row_id))  # type: ignore[attr-defined]
            value = found.scalar_one_or_none()
    return None if value is None else int(value)


@asynccontextmanager
async def scope_of_row(db: Database, table: type[InWorkspace], row_id: int) -> AsyncIterator[bool]:
    """Inside the workspace of `table`'s row `row_id`; yields False (and opens no scope) when it is gone."""
    workspace_id = await workspace_of(db, table, row_id)
    if workspace_id is None:
        yield False
        return
    with workspace_scope(workspace_id):
        yield True
