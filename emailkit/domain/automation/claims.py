"""Finding due runs and handing them to workers: the ticker's part of automation.

Every tick, runs that are due (``due_at`` reached, read through the partial index of ACTIVE runs), of an ACTIVE
flow, and held by nobody are claimed in chunks: a claim row (``flow_claims``: its number, its runs, a hold) is
written, its number on the runs, and one job per chunk is enqueued with the claim, after the commit. A worker
that takes the job renews the claim row's lease while it works and deletes it when it hands the runs back. A
job lost with its queue, or a worker that died, lets the lease run out: a later tick deletes the expired row
and claims the runs again under a new number, so the old job (if it ever runs) finds nothing of its own.
Nothing of a waiting run is anywhere but in its row.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    TextClause,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, one_of
from emailkit.db.tables.automation import RUN_ACTIVE, Flow, FlowClaim, FlowRun, FlowStatus
from emailkit.domain.ports.queue import QueueUnavailable
from emailkit.domain.runtime import Runtime
from emailkit.domain.transactions import run_in_transaction

log = logging.getLogger(__name__)

ADVANCE_JOB = "advance_flow_runs"
# Runs per job: enough that a job's statements each cover many people, few enough that a slow provider holds
# a small share of the due work.
CHUNK = 1000
# Claimed per tick at most (the rest waits for the next tick, a second later).
MAX_CHUNKS_PER_TICK = 40
# Claims waiting in the queue (made, not yet taken by a worker), at most: as many as are being worked on, so
# that each busy worker thread has about one job waiting behind it, whatever the number of workers; and at rest
# this many, to start as many threads at once. Far more waiting than the workers start within a hold would
# have holds run out in the queue, the runs be claimed again, and the first jobs find nothing left of their own
# (work and writes for nothing).
MIN_QUEUED = 8


@dataclass(frozen=True)
class Claim:
    workspace_id: int
    claim: int
    runs: int


def _due(now: datetime) -> list[ColumnElement[bool] | TextClause]:
    active_flows = select(Flow.id).where(Flow.status == FlowStatus.ACTIVE)
    live_claim = select(FlowClaim.id).where(FlowClaim.id == FlowRun.claim)
    return [
        RUN_ACTIVE,
        FlowRun.due_at <= now,
        # The run's own hold is checked too: a run another ticker has just claimed is re-read by its lock with
        # that hold in it (a subquery would still see this statement's snapshot, without the new claim's row).
        or_(FlowRun.claim.is_(None), and_(FlowRun.lease_until < now, ~live_claim.exists())),
        FlowRun.flow_id.in_(active_flows),
    ]


async def _claim_chunk(session: AsyncSession, now: datetime, hold: float) -> list[Claim]:
    # Claims whose lease ran out are dead: their runs may be claimed again. The delete waits for a hand-over
    # that holds such a row to commit (its message is then SENDING for whoever takes the run next).
    await session.execute(
        delete(FlowClaim).where(FlowClaim.lease_until < now).execution_options(synchronize_session=False)
    )
    stmt = select(FlowRun.id, FlowRun.workspace_id).where(*_due(now)).order_by(FlowRun.due_at).limit(CHUNK)
    if dialect_of(session) == "postgresql":
        # Two tickers (two worker processes) claim different runs instead of queueing on the same rows.
        stmt = stmt.with_for_update(skip_locked=True, of=FlowRun)
        # The due index walked in order, stopping at the chunk: the workspace policy's condition makes the
        # planner expect a few dozen due runs, and it would otherwise gather every due run (100,000 when a wait
        # ends for all of them at once) and sort them, at every tick. That misestimate also prices the walk
        # above jit_above_cost: JIT compiled it at every tick (≈85 ms of the 115 a read took at 100,000 runs).
        await session.execute(
            text(
                "SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true),"
                " set_config('jit', 'off', true)"
            )
        )
    rows = (await session.execute(stmt)).all()
    by_workspace: dict[int, list[int]] = defaultdict(list)
    for run_id, workspace_id in rows:
        by_workspace[int(workspace_id)].append(int(run_id))
    claims = []
    until = now + timedelta(seconds=hold)
    for workspace_id, ids in sorted(by_workspace.items()):
        number = secrets.randbits(62)
        await session.execute(
            insert(FlowClaim).values(
                id=number, workspace_id=workspace_id, run_ids=ids, runs=len(ids), lease_until=until
            )
        )
        await session.execute(
            update(FlowRun)
            .where(one_of(session, FlowRun.id, ids, BigInteger()))
            .values(claim=number, lease_until=until)
            .execution_options(synchronize_session=False)
        )
        claims.append(Claim(workspace_id, number, len(ids)))
    return claims


async def _in_flight(session: AsyncSession, now: datetime) -> tuple[int, int]:
    """Claims whose hold or lease has not run out: (waiting in the queue, taken by a worker)."""
    stmt = select(
        func.count().filter(FlowClaim.taken_at.is_(None)),
        func.count().filter(FlowClaim.taken_at.is_not(None)),
    ).where(FlowClaim.lease_until >= now)
    queued, taken = (await session.execute(stmt)).one()
    return int(queued), int(taken)


async def dispatch_due_runs(runtime: Runtime, now: datetime, *, hold: float) -> list[Claim]:
    """Claim what is due (across workspaces; the caller holds the all-workspaces scope) and enqueue a job per
    claim; returns the claims made."""
    if runtime.jobs is None:
        return []
    made: list[Claim] = []
    async with runtime.db.session() as s:
        queued, taken = await _in_flight(s, now)
    chunks = min(MAX_CHUNKS_PER_TICK, max(MIN_QUEUED, taken) - queued)
    for _ in range(chunks):

        async def claim(session: AsyncSession) -> list[Claim]:
            return await _claim_chunk(session, now, hold)

        claims = await run_in_transaction(runtime.db, claim)
        for c in claims:
            try:
                await runtime.jobs.enqueue(ADVANCE_JOB, {"workspace_id": c.workspace_id, "claim": c.claim})
            except QueueUnavailable:
                # Claimed but not queued: the hold expires and a later tick claims the runs again.
                log.warning(
                    "flow runs: the queue is unreachable; %d claim(s) wait for their hold", len(claims)
                )
                return made
        made += claims
        if sum(c.runs for c in claims) < CHUNK:
            break
    return made
