"""Which workspace the current code acts for: the tenant scope every tenant query is filtered by.

A composition root (the API's request handling, a job, the ticker) opens a scope; sessions read it:

- ``workspace_scope(id)``: statements see and write that workspace only. ORM statements are filtered by the
  session (see ``db.session_scope``); on PostgreSQL every connection also carries the id in the setting
  ``emailkit.workspace_id``, which the row-level security policies check, so a statement the application
  forgot to filter still sees nothing of another workspace.
- ``all_workspaces()``: work that spans workspaces by nature (authenticating a key, correlating a provider's
  event to its delivery, the scheduler). Its writes name their workspace explicitly.
- no scope: tenant statements are refused, by the session and by the policies, never answered from every
  workspace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final


class NoWorkspaceScope(RuntimeError):
    """Tenant data was touched outside any workspace scope: a programming error, never a user's."""


@dataclass(frozen=True)
class Scope:
    # None: every workspace (system work).
    workspace_id: int | None

    @property
    def everywhere(self) -> bool:
        return self.workspace_id is None

    @property
    def setting(self) -> str:
        """The value of ``emailkit.workspace_id`` the row-level security policies read (0: every workspace)."""
        return "0" if self.workspace_id is None else str(self.workspace_id)


ALL_WORKSPACES: Final = Scope(None)
# What the policies see on a connection outside any scope: no workspace at all.
NO_SCOPE_SETTING: Final = ""

_current: ContextVar[Scope | None] = ContextVar("emailkit_scope", default=None)


def current_scope() -> Scope | None:
    return _current.get()


def current_workspace_id() -> int:
    """The workspace in scope; NoWorkspaceScope outside one (also inside ``all_workspaces``)."""
    scope = _current.get()
    if scope is None or scope.workspace_id is None:
        raise NoWorkspaceScope(
            "this needs a workspace in scope"
            + ("" if scope is None else " (code running for all workspaces names its rows' workspace)")
        )
    return scope.workspace_id


@contextmanager
def workspace_scope(workspace_id: int) -> Iterator[Scope]:
    if workspace_id <= 0:
        raise ValueError(f"not a workspace id: {workspace_id}")
    token = _current.set(Scope(workspace_id))
    try:
        yield Scope(workspace_id)
    finally:
        _current.reset(token)


@contextmanager
def all_workspaces() -> Iterator[Scope]:
    token = _current.set(ALL_WORKSPACES)
    try:
        yield ALL_WORKSPACES
    finally:
        _current.reset(token)


@contextmanager
def no_scope() -> Iterator[None]:
    """Outside any workspace, whatever the caller was in: tenant access is refused inside."""
    token = _current.set(None)
    try:
        yield None
    finally:
        _current.reset(token)
