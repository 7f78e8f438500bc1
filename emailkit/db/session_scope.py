"""Sessions that filter every ORM statement by the workspace in scope (see ``db.scope``).

The application's layer of isolation: a select, update or delete of tenant rows through a session gets
``workspace_id = <scope>`` on every occurrence of every tenant table in it (joins, subqueries, relationship
loads), so a lookup by another workspace's id finds nothing. Outside any scope such a statement is refused.
Core statements on a connection are not seen here; on PostgreSQL the row-level security policies cover them,
and the code that runs them names its workspace.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.orm.util import LoaderCriteriaOption

from emailkit.db.scope import NoWorkspaceScope, current_scope
from emailkit.db.tables.tenancy import InWorkspace


class ScopedSession(Session):
    """The sync session class behind every AsyncSession that Database hands out."""


def _touches_tenant_rows(state: ORMExecuteState) -> bool:
    mappers = state.all_mappers if state.is_select else [state.bind_mapper]
    return any(m is not None and issubclass(m.class_, InWorkspace) for m in mappers)


@event.listens_for(ScopedSession, "do_orm_execute")
def _filter_by_workspace(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the criteria of the statement that loaded the parent propagate to these
    scope = current_scope()
    if scope is None:
        if _touches_tenant_rows(state):
            raise NoWorkspaceScope("a tenant table was queried outside any workspace scope")
        return
    if scope.workspace_id is None:
        return
    state.statement = state.statement.options(workspace_criteria(scope.workspace_id))


def workspace_criteria(workspace_id: int) -> LoaderCriteriaOption:
    """The option holding every tenant table of an ORM statement to one workspace: what the session adds to
    each select, update and delete, for statements it does not see (one wrapped in an EXPLAIN)."""
    return with_loader_criteria(
        InWorkspace, lambda cls: cls.workspace_id == workspace_id, include_aliases=True
    )
