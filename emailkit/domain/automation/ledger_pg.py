"""The PostgreSQL forms of a flow step's bulk writes: each is one statement over arrays (``unnest``).

Through SQLAlchemy the same writes were an executemany: the step ledger's settle ran as one upsert per run
(500 executions, each with its own bind, plan and executor start on the server, and a parameter dictionary
processed per row in the worker). Over arrays the server plans one statement per group and the worker encodes
a few arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import pg_driver

_INSERT_STEPS = """
    INSERT INTO flow_step_runs
        (workspace_id, run_id, flow_id, step_key, visit, status, delivery_id, attempts, detail, started_at)
    SELECT $1, v.run_id, v.flow_id, v.step_key, v.visit, $2, v.delivery_id, 0, $3, $4
    FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::int[], $9::bigint[])
        AS v(run_id, flow_id, step_key, visit, delivery_id)
    ON CONFLICT (run_id, step_key, visit) DO NOTHING
    RETURNING id, run_id
"""

_SETTLE_STEPS = """
    INSERT INTO flow_step_runs
        (workspace_id, run_id, flow_id, step_key, visit, status, attempts, detail, started_at, finished_at)
    SELECT $1, v.run_id, v.flow_id, v.step_key, v.visit, v.status, 0, v.detail, $2, $2
    FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[])
        AS v(run_id, flow_id, step_key, visit, status, detail)
    ON CONFLICT (run_id, step_key, visit) DO UPDATE
        SET status = excluded.status, detail = excluded.detail, finished_at = excluded.finished_at
"""

_INSERT_DELIVERIES = """
    INSERT INTO deliveries
        (workspace_id, subscriber_id, email, template_id, status, via_list_ids, attempts, flow_run_id,
         sender_id, created_at, updated_at)
    SELECT $1, v.subscriber_id, v.email, $2, $3, v.via::jsonb, 0, v.run_id, $4, $5, $5
    FROM unnest($6::bigint[], $7::text[], $8::text[], $9::bigint[]) AS v(subscriber_id, email, via, run_id)
    RETURNING id, flow_run_id
"""


# A lookup of each key through the unique index, never a join: with random_page_cost's default, the planner
# prefers hashing the whole ledger to 1,000 index probes while it holds fewer than ≈150,000 rows (40 ms for a
# group at 60,000 rows, against 5 ms probing). A LATERAL subquery with a LIMIT is not flattened into a join.
_EXISTING_STEPS = """
    SELECT s.id, s.run_id, s.delivery_id, s.attempts
    FROM unnest($1::bigint[], $2::text[], $3::int[]) AS v(run_id, step_key, visit)
        CROSS JOIN LATERAL (
            SELECT f.id, f.run_id, f.delivery_id, f.attempts FROM flow_step_runs AS f
            WHERE f.run_id = v.run_id AND f.step_key = v.step_key AND f.visit = v.visit
            LIMIT 1
        ) AS s
"""


class AtStep(Protocol):
    """A run at a step: what names its ledger row (the run, its flow, the step and the visit)."""

    @property
    def id(self) -> int: ...

    @property
    def flow_id(self) -> int: ...

    @property
    def step_key(self) -> str: ...

    @property
    def visit(self) -> int: ...


def _columns(runs: Sequence[AtStep]) -> tuple[list[int], list[int], list[str], list[int]]:
    """The runs' ledger keys as the four arrays the statements unnest (run, flow, step, visit), read off the
    runs themselves: an object per key cost as much as the arrays."""
    return (
        [r.id for r in runs],
        [r.flow_id for r in runs],
        [r.step_key for r in runs],
        [r.visit for r in runs],
    )


async def existing_steps(
    session: AsyncSession, runs: Sequence[AtStep]
) -> list[tuple[int, int, int | None, int]]:
    """(row id, run id, delivery id, attempts) of the rows that exist for the runs at their steps.

    Planned for this call, as is the rest of the caller's transaction: the ledger grows from nothing as a flow
    runs, and a generic plan made while it was small (with no ANALYZE since) read the whole table at every
    step, where the unique index finds each row.
    """
    driver = await pg_driver(session)
    await driver.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    ids, _flows, steps, visits = _columns(runs)
    rows = await driver.fetch(_EXISTING_STEPS, ids, steps, visits)
    return [(int(r["id"]), int(r["run_id"]), r["delivery_id"], int(r["attempts"])) for r in rows]


async def insert_steps(
    session: AsyncSession,
    workspace_id: int,
    runs: Sequence[AtStep],
    deliveries: Sequence[int | None],
    status: str,
    detail: str | None,
    now: datetime,
) -> list[tuple[int, int]]:
    """PENDING rows where none exist; returns (row id, run id) of the rows written."""
    rows = await (await pg_driver(session)).fetch(
        _INSERT_STEPS,
        workspace_id,
        status,
        detail,
        now,
        *_columns(runs),
        list(deliveries),
    )
    return [(int(r["id"]), int(r["run_id"])) for r in rows]


async def settle_steps(
    session: AsyncSession,
    workspace_id: int,
    runs: Sequence[AtStep],
    statuses: Sequence[str],
    details: Sequence[str | None],
    now: datetime,
) -> None:
    """Each row's outcome, written over the row the step started or as a new one."""
    await (await pg_driver(session)).execute(
        _SETTLE_STEPS,
        workspace_id,
        now,
        *_columns(runs),
        list(statuses),
        list(details),
    )


async def insert_deliveries(
    session: AsyncSession,
    workspace_id: int,
    template_id: int | None,
    sender_id: int | None,
    status: str,
    rows: Sequence[tuple[int, int, str, Sequence[int]]],
    now: datetime,
) -> list[tuple[int, int]]:
    """QUEUED deliveries of a SEND step, one per (run id, subscriber id, email, list ids); returns (delivery
    id, run id) of each."""
    # A group's people are mostly reached through the same lists: each set encoded once.
    encoded: dict[tuple[int, ...], str] = {}
    vias = []
    for _run, _person, _email, via in rows:
        key = tuple(via)
        text = encoded.get(key)
        if text is None:
            text = encoded[key] = json.dumps(list(key))
        vias.append(text)
    inserted: list[Any] = await (await pg_driver(session)).fetch(
        _INSERT_DELIVERIES,
        workspace_id,
        template_id,
        status,
        sender_id,
        now,
        [r[1] for r in rows],
        [r[2] for r in rows],
        vias,
        [r[0] for r in rows],
    )
    return [(int(r["id"]), int(r["flow_run_id"])) for r in inserted]
