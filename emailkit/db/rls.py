"""Row-level security on PostgreSQL: the one policy every tenant table carries (see migration 0010).

A row is visible and writable when its workspace is the one in the connection's ``emailkit.workspace_id``
setting (set from the scope at pool checkout, see ``db.engine``), or when that setting is 0 (work for all
workspaces). Outside any scope the setting is empty, which matches nothing.
"""

from __future__ import annotations

POLICY = "workspace_isolation"

# The scope as a number: the workspace id, 0 for every workspace, -1 when none is set.
SCOPE = "COALESCE(NULLIF(current_setting('emailkit.workspace_id', true), '')::bigint, -1)"


def condition(column: str = "workspace_id") -> str:
    # current_setting() in place, not in a sub-select: the planner reads a stable function's value when it
    # estimates, so a workspace's row estimates (totalCount past its exact limit) stay its own; an InitPlan
    # would be read once per statement but estimated blind (half the table). Measured, the per-row call costs
    # the send no throughput we could tell from noise (BENCHMARKS.md).
    return f"({column} = {SCOPE} OR {SCOPE} = 0)"


def secure_statements(table: str, column: str = "workspace_id") -> list[str]:
    """DDL that puts `table` (a qualified name, constants only) under the policy, FORCEd so that its owner,
    the application's role, is held to it too."""
    check = condition(column)
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {POLICY} ON {table} USING {check} WITH CHECK {check}",
    ]


# PostgreSQL evaluates a policy before any condition of the query whose function is not LEAKPROOF, and so
# cannot use an index for such a condition: the trigram indexes behind substring search (LIKE, ILIKE) and the
# JSON index behind attribute filters (@>) would go unused, and those reads scan the workspace's rows. These
# functions raise nothing and have no side effect that depends on the value they compare, so emailkit's
# database marks them LEAKPROOF (a superuser's step: migration 0010 takes it when it runs as one; otherwise
# README, "Workspaces").
LEAKPROOF_FUNCTIONS = ("textlike(text, text)", "texticlike(text, text)", "jsonb_contains(jsonb, jsonb)")


def leakproof_statements() -> list[str]:
    return [f"ALTER FUNCTION {function} LEAKPROOF" for function in LEAKPROOF_FUNCTIONS]


NOT_LEAKPROOF = (
    "SELECT p.oid::regprocedure::text FROM pg_proc p "
    "WHERE p.oid = ANY(ARRAY['textlike(text,text)', 'texticlike(text,text)', 'jsonb_contains(jsonb,jsonb)']"
    "::regprocedure[]) AND NOT p.proleakproof"
)
