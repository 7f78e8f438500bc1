"""The workspace an authenticated request acts in: the key's own, or the one an instance key names in the
X-Emailkit-Workspace header (a workspace's global id, number or slug)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.scope import Scope, no_scope, workspace_scope
from emailkit.domain import workspaces
from emailkit.domain.apikeys import Principal
from emailkit.domain.workspaces import WrongWorkspace as WrongWorkspace

HEADER = workspaces.HEADER


async def acting_workspace(db: Database, principal: Principal, header: str | None) -> int | None:
    """Raises WrongWorkspace when the header names a workspace this key may not act in (or none at all)."""
    requested: int | None = None
    if header is not None and header.strip():
        value = header.strip()
        parsed = globalid.parse(value)
        async with db.read_session() as session:
            if parsed is not None and parsed[0] == "Workspace":
                requested = parsed[1]
            else:
                found = await workspaces.workspace_by_reference(session, value)
                if found is None:
                    raise WrongWorkspace(f"{HEADER} names no workspace")
                requested = found.id
            return await workspaces.acting_workspace(session, principal, requested)
    if principal.workspace_id is not None:
        # The common case needs no database: a workspace key acts in its own workspace.
        return principal.workspace_id
    return None


@contextmanager
def acting_scope(workspace_id: int | None) -> Iterator[Scope | None]:
    """A request's scope: its workspace; none for an instance key that named none (workspace management
    only: anything else is refused with WORKSPACE_REQUIRED)."""
    manager: AbstractContextManager[Scope | None] = (
        no_scope() if workspace_id is None else workspace_scope(workspace_id)
    )
    with manager as scope:
        yield scope


class OutsideAnyWorkspace:
    """Every request starts outside any workspace, whatever the server's own context holds (an embedding
    application, a test): each route then opens the scope its key, token or row decides, and a route that
    forgets to is refused rather than served from a workspace it inherited."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        with no_scope():
            await self.app(scope, receive, send)
