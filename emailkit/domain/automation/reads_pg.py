"""The PostgreSQL forms of a claim's bulk reads: its runs and their people, straight through the driver.

Through SQLAlchemy each of the 1,000 rows of a claim became a Row (each column fetched by name through it) and
its status an enum by the type's processor: half of what reading a claim cost the worker. Here the driver's
records are unpacked by position. The statements are planned as a generic plan sees them (a bound array of
ids, the status a literal): the primary keys find the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import pg_driver

_CLAIMED_RUNS = """
    SELECT r.id, r.workspace_id, r.flow_id, r.version_id, r.subscriber_id, r.step_key, r.visit, r.waiting,
        r.context, f.name, f.status
    FROM flow_runs AS r JOIN flows AS f ON f.id = r.flow_id
    WHERE r.id = ANY($1::bigint[]) AND r.claim = $2 AND r.status = 'ACTIVE'
    ORDER BY r.id
"""

_PEOPLE = """
    SELECT id, email, name, attributes, status FROM subscribers WHERE id = ANY($1::bigint[])
"""


async def claimed_runs(session: AsyncSession, run_ids: Sequence[int], claim: int) -> list[Sequence[Any]]:
    """(id, workspace, flow, version, subscriber, step key, visit, waiting, context, flow name, flow status)
    of the ACTIVE runs among `run_ids` that the claim holds, by id."""
    rows: list[Sequence[Any]] = await (await pg_driver(session)).fetch(_CLAIMED_RUNS, list(run_ids), claim)
    return rows


async def people(session: AsyncSession, ids: Sequence[int]) -> list[Sequence[Any]]:
    """(id, email, name, attributes, status) of each subscriber of `ids` that exists."""
    rows: list[Sequence[Any]] = await (await pg_driver(session)).fetch(_PEOPLE, list(ids))
    return rows
