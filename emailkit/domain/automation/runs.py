"""The runs a worker holds under one claim, and the writes that move them: the ledger row of the step a run
finished, and the run's next place (its next step, a wait, or the end), in the caller's transaction.

Every write on a run is guarded by the claim: a worker presumed dead (its lease expired, its runs claimed again
under another number) changes nothing, and its transaction is rolled back (:class:`LeaseLost`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, one_of, upsert
from emailkit.db.tables.audience import Subscriber, SubscriberStatus
from emailkit.db.tables.automation import (
    Flow,
    FlowClaim,
    FlowRun,
    FlowRunStatus,
    FlowStatus,
    FlowStepRun,
    FlowStepRunStatus,
)
from emailkit.domain.audience.timezones import zones_of
from emailkit.domain.automation import ledger_pg, reads_pg
from emailkit.domain.automation.counters import Tally
from emailkit.domain.automation.definition import Definition, Step, StepType
from emailkit.domain.automation.versions import definitions
from emailkit.domain.automation.waits import wake_time
from emailkit.domain.webhooks_out import emitters
from emailkit.metrics import record as metrics


class LeaseLost(Exception):
    """The runs were claimed again by another worker: this one must not change them."""


@dataclass
class Person:
    id: int
    email: str
    name: str
    attributes: dict[str, Any]
    status: SubscriberStatus


@dataclass
class Run:
    id: int
    workspace_id: int
    flow_id: int
    flow_name: str
    version_id: int
    subscriber_id: int | None
    step_key: str
    visit: int
    waiting: bool
    context: dict[str, Any] | None
    definition: Definition
    person: Person | None = None
    # Still to be moved under this claim (False once it waits, finished or was handed back).
    live: bool = True

    @property
    def step(self) -> Step | None:
        return self.definition.step(self.step_key)


class Finish(NamedTuple):
    """A run's current step is done: its ledger row's outcome, and where the run goes (a tuple: a group makes
    1,000 at once, and a frozen dataclass's were a tenth of settling them)."""

    run: Run
    status: FlowStepRunStatus
    detail: str | None = None
    # The next step; None ends the run (COMPLETED, or EXITED with `exit_reason`).
    next: str | None = None
    exit_reason: str | None = None
    # The ledger row was written when the step started (WAIT, SEND, WEBHOOK): it is only completed here.
    started: bool = False


@dataclass
class Held:
    """What a worker holds: the claim and its runs."""

    workspace_id: int
    claim: int
    runs: list[Run] = field(default_factory=list)
    # The zone of people whose own and whose lists' are unknown (a WAIT window is on each person's clock).
    default_timezone: str = "UTC"

    def live(self) -> list[Run]:
        return [r for r in self.runs if r.live]


async def take(
    session: AsyncSession,
    workspace_id: int,
    claim: int,
    now: datetime,
    lease: float,
    *,
    default_timezone: str = "UTC",
) -> Held:
    """The claim's runs of ACTIVE flows, with their people, leased to this worker; runs of a flow paused or
    archived since the claim are handed back untouched."""
    held = Held(workspace_id, claim, default_timezone=default_timezone)
    taken = (
        await session.execute(
            update(FlowClaim)
            .where(FlowClaim.id == claim)
            .values(lease_until=now + timedelta(seconds=lease), taken_at=now)
            .returning(FlowClaim.run_ids)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if not taken:  # its lease ran out and it was claimed again, or it was released
        return held
    rows = await _claimed_runs(session, [int(i) for i in taken], claim)
    parsed = await definitions(session, {int(row[3]) for row in rows})
    stopped = []
    for (
        run_id,
        workspace,
        flow_id,
        version_id,
        subscriber_id,
        key,
        visit,
        waiting,
        context,
        name,
        status,
    ) in rows:
        definition = parsed.get(version_id)
        if status != FlowStatus.ACTIVE or definition is None or key is None:
            stopped.append(run_id)
            continue
        held.runs.append(
            Run(
                id=run_id,
                workspace_id=workspace,
                flow_id=flow_id,
                flow_name=name,
                version_id=version_id,
                subscriber_id=subscriber_id,
                step_key=key,
                visit=visit,
                waiting=waiting,
                context=context,
                definition=definition,
            )
        )
    if stopped:
        await release(session, claim, stopped)
    people = await _people(session, [r.subscriber_id for r in held.runs if r.subscriber_id is not None])
    for r in held.runs:
        r.person = people.get(r.subscriber_id) if r.subscriber_id is not None else None
    return held


async def _claimed_runs(session: AsyncSession, run_ids: list[int], claim: int) -> Sequence[Sequence[Any]]:
    """The claim's ACTIVE runs among `run_ids`, as ``reads_pg.claimed_runs`` gives them."""
    if dialect_of(session) == "postgresql":
        return await reads_pg.claimed_runs(session, run_ids, claim)
    stmt = (
        select(
            FlowRun.id,
            FlowRun.workspace_id,
            FlowRun.flow_id,
            FlowRun.version_id,
            FlowRun.subscriber_id,
            FlowRun.step_key,
            FlowRun.visit,
            FlowRun.waiting,
            FlowRun.context,
            Flow.name,
            Flow.status,
        )
        .join(Flow, Flow.id == FlowRun.flow_id)
        .where(
            one_of(session, FlowRun.id, run_ids, BigInteger()),
            FlowRun.claim == claim,
            FlowRun.status == FlowRunStatus.ACTIVE,
        )
        .order_by(FlowRun.id)
    )
    return (await session.execute(stmt)).all()


async def _people(session: AsyncSession, ids: Sequence[int]) -> dict[int, Person]:
    if not ids:
        return {}
    rows: Sequence[Sequence[Any]]
    if dialect_of(session) == "postgresql":
        rows = await reads_pg.people(session, list(set(ids)))
    else:
        stmt = select(
            Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.attributes, Subscriber.status
        ).where(one_of(session, Subscriber.id, set(ids), BigInteger()))
        rows = (await session.execute(stmt)).all()
    return {
        pid: Person(pid, email, name, dict(attributes or {}), SubscriberStatus(status))
        for pid, email, name, attributes, status in rows
    }


async def refresh_people(session: AsyncSession, runs: Sequence[Run]) -> None:
    """Read the people again (an UPDATE step changed them, or a previous step took long)."""
    people = await _people(session, [r.subscriber_id for r in runs if r.subscriber_id is not None])
    for r in runs:
        r.person = people.get(r.subscriber_id) if r.subscriber_id is not None else None


async def release(session: AsyncSession, claim: int, run_ids: Sequence[int]) -> None:
    """Hand runs back: a later tick claims them again when due."""
    if not run_ids:
        return
    await session.execute(
        update(FlowRun)
        .where(one_of(session, FlowRun.id, list(run_ids), BigInteger()), FlowRun.claim == claim)
        .values(claim=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


async def end_claim(session: AsyncSession, held: Held) -> None:
    """The worker is done with the claim: the runs it still holds are handed back and the claim's row goes.
    (Every other run of the claim left it with the write that parked or finished it.)"""
    await release(session, held.claim, [r.id for r in held.runs if r.live])
    await session.execute(
        delete(FlowClaim).where(FlowClaim.id == held.claim).execution_options(synchronize_session=False)
    )


async def extend(session: AsyncSession, claim: int, now: datetime, lease: float) -> bool:
    """Renew the claim's lease; False once it is gone (its lease ran out and it was claimed again)."""
    result = await session.execute(
        update(FlowClaim)
        .where(FlowClaim.id == claim)
        .values(lease_until=now + timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class StepRow(NamedTuple):
    """A run's ledger row for its current step, as a step needs it (a tuple: a group makes 1,000 at once)."""

    id: int
    delivery_id: int | None
    attempts: int


async def start_steps(
    session: AsyncSession, held: Held, runs: Sequence[Run], tally: Tally, now: datetime
) -> dict[int, StepRow]:
    """The ledger rows of the runs' current steps, PENDING where they did not exist yet (counted as entered);
    returns each run's row as it stands."""
    if not runs:
        return {}
    fresh = await insert_steps(session, held, runs, now)
    for r in runs:
        if r.id in fresh:
            tally.step(r.flow_id, r.step_key, "entered")
    found = await existing_steps(session, [r for r in runs if r.id not in fresh])
    return {**fresh, **found}


async def insert_steps(
    session: AsyncSession,
    held: Held,
    runs: Sequence[Run],
    now: datetime,
    *,
    deliveries: dict[int, int] | None = None,
    detail: str | None = None,
) -> dict[int, StepRow]:
    """PENDING ledger rows for the runs that have none at their current step (naming each run's delivery when
    given); returns the rows written, by run."""
    if not runs:
        return {}
    named = deliveries or {}
    if dialect_of(session) == "postgresql":
        written = await ledger_pg.insert_steps(
            session,
            held.workspace_id,
            runs,
            [named.get(r.id) for r in runs],
            FlowStepRunStatus.PENDING.value,
            detail,
            now,
        )
        return {run_id: StepRow(row_id, named.get(run_id), 0) for row_id, run_id in written}
    rows = [
        {
            "workspace_id": held.workspace_id,
            "run_id": r.id,
            "flow_id": r.flow_id,
            "step_key": r.step_key,
            "visit": r.visit,
            "status": FlowStepRunStatus.PENDING,
            "delivery_id": named.get(r.id),
            "attempts": 0,
            "detail": detail,
            "started_at": now,
        }
        for r in runs
    ]
    table = FlowStepRun.__table__
    # SQLite: the rows as parameters of one statement (an executemany), compiled once.
    inserted = await session.execute(
        upsert(session)(table)
        .on_conflict_do_nothing(index_elements=["run_id", "step_key", "visit"])
        .returning(table.c.id, table.c.run_id),
        rows,
    )
    return {int(run_id): StepRow(int(row_id), named.get(int(run_id)), 0) for row_id, run_id in inserted.all()}


async def existing_steps(session: AsyncSession, runs: Sequence[Run]) -> dict[int, StepRow]:
    """The ledger rows the runs already have at their current steps (a step retried, or redone after a crash)."""
    if not runs:
        return {}
    if dialect_of(session) == "postgresql":
        return {
            run_id: StepRow(row_id, delivery_id, attempts)
            for row_id, run_id, delivery_id, attempts in await ledger_pg.existing_steps(session, runs)
        }
    by_id = {r.id: r for r in runs}
    table = FlowStepRun.__table__
    stmt = select(
        table.c.id, table.c.run_id, table.c.step_key, table.c.visit, table.c.delivery_id, table.c.attempts
    ).where(
        one_of(session, table.c.run_id, list(by_id), BigInteger()),
        # Only the rows of the steps the runs are at (a run's earlier steps have rows of their own).
        table.c.step_key.in_(sorted({r.step_key for r in runs})),
    )
    found: dict[int, StepRow] = {}
    for row in (await session.execute(stmt)).all():
        r = by_id[int(row.run_id)]
        if row.step_key == r.step_key and row.visit == r.visit:
            found[r.id] = StepRow(int(row.id), row.delivery_id, int(row.attempts))
    return found


async def settle(
    session: AsyncSession, held: Held, finishes: Sequence[Finish], tally: Tally, now: datetime
) -> None:
    """Write each finished step's ledger row and move its run on, in the caller's transaction."""
    if not finishes:
        return
    await _write_outcomes(session, held.workspace_id, finishes, now)
    for f in finishes:
        if not f.started:
            tally.step(f.run.flow_id, f.run.step_key, "entered")
        tally.step(f.run.flow_id, f.run.step_key, "completed")
        counted = {
            FlowStepRunStatus.SENT: "sent",
            FlowStepRunStatus.SKIPPED: "skipped",
            FlowStepRunStatus.FAILED: "failed",
        }
        name = counted.get(f.status)
        if name is not None:
            tally.step(f.run.flow_id, f.run.step_key, name)  # type: ignore[arg-type]
    await _move(session, held, finishes, tally, now)


async def _write_outcomes(
    session: AsyncSession, workspace: int, finishes: Sequence[Finish], now: datetime
) -> None:
    if dialect_of(session) == "postgresql":
        await ledger_pg.settle_steps(
            session,
            workspace,
            [f.run for f in finishes],
            [f.status.value for f in finishes],
            [f.detail for f in finishes],
            now,
        )
        return
    table = FlowStepRun.__table__
    rows = [
        {
            "workspace_id": workspace,
            "run_id": f.run.id,
            "flow_id": f.run.flow_id,
            "step_key": f.run.step_key,
            "visit": f.run.visit,
            "status": f.status,
            "attempts": 0,
            "detail": f.detail,
            "started_at": now,
            "finished_at": now,
        }
        for f in finishes
    ]
    stmt = upsert(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "step_key", "visit"],
        set_={
            "status": stmt.excluded.status,
            "detail": stmt.excluded.detail,
            "finished_at": stmt.excluded.finished_at,
        },
    )
    # SQLite: an executemany (compiled once).
    await session.execute(stmt, rows)


async def _move(
    session: AsyncSession, held: Held, finishes: Sequence[Finish], tally: Tally, now: datetime
) -> None:
    onward: dict[tuple[int, str], list[Run]] = defaultdict(list)
    ended: dict[str | None, list[Run]] = defaultdict(list)
    for f in finishes:
        if f.next is not None:
            onward[(f.run.version_id, f.next)].append(f.run)
        else:
            ended[f.exit_reason].append(f.run)
    for (_, key), runs in sorted(onward.items()):
        step = runs[0].definition.step(key)
        if step is not None and step.type == StepType.WAIT:
            # Arriving at a WAIT is written with the move (one write of each run, not one and then another in
            # the next round): a SEND → WAIT → SEND flow's hot path.
            await wait_at(session, held, step, runs, tally, now, moving=True)
            continue
        # due_at stays: a live run was due when claimed, and an unchanged due_at keeps the write HOT.
        await _guarded(
            session, held.claim, runs, {"step_key": key, "visit": FlowRun.visit + 1, "waiting": False}
        )
        for r in runs:
            r.step_key, r.visit, r.waiting = key, r.visit + 1, False
    for reason, runs in ended.items():
        await finish_runs(session, held.claim, runs, tally, now, exit_reason=reason)


async def wait_at(
    session: AsyncSession,
    held: Held,
    step: Step,
    runs: Sequence[Run],
    tally: Tally,
    now: datetime,
    *,
    moving: bool,
) -> None:
    """The runs start the WAIT `step` (moving to it from their current step when `moving`): its ledger row,
    and their due time; a run whose wait is already over (a window it is inside) stays live at the step,
    waiting, and the others are handed back until their time."""
    if not runs:
        return
    if moving:
        for r in runs:
            r.step_key, r.visit = step.key, r.visit + 1
    fresh = await insert_steps(session, held, runs, now)
    for r in runs:
        if r.id in fresh:
            tally.step(r.flow_id, step.key, "entered")
    # A window is on each person's clock: their timezone, else their list's, else the instance's.
    zones = (
        await zones_of(session, [r.subscriber_id for r in runs if r.subscriber_id], held.default_timezone)
        if step.window is not None
        else {}
    )
    by_time: dict[datetime, list[Run]] = defaultdict(list)
    for r in runs:
        by_time[max(now, wake_time(step, zones.get(r.subscriber_id or 0, UTC), now))].append(r)
    for at, group in sorted(by_time.items()):
        values: dict[str, Any] = {"due_at": at, "waiting": True}
        if moving:
            values.update(step_key=step.key, visit=FlowRun.visit + 1)
        if at > now:
            values.update(claim=None, lease_until=None)
        await _guarded(session, held.claim, group, values)
        for r in group:
            r.waiting = True
            r.live = at <= now


async def finish_runs(
    session: AsyncSession,
    claim: int,
    runs: Sequence[Run],
    tally: Tally,
    now: datetime,
    *,
    exit_reason: str | None,
) -> None:
    """The runs leave the flow: COMPLETED, or EXITED for `exit_reason`."""
    if not runs:
        return
    status = FlowRunStatus.COMPLETED if exit_reason is None else FlowRunStatus.EXITED
    await _guarded(
        session,
        claim,
        runs,
        {
            "status": status,
            "due_at": None,
            "finished_at": now,
            "exit_reason": exit_reason,
            "claim": None,
            "lease_until": None,
            "waiting": False,
        },
    )
    for r in runs:
        r.live = False
        tally.finished(r.flow_id, exit_reason is not None)
    metrics.flow_runs(status, len(runs))
    workspace = runs[0].workspace_id  # a claim's runs are of one workspace
    if exit_reason is None and await emitters.wanted(session, workspace, "flow.completed"):
        await emitters.flow_runs(
            session, "flow.completed", workspace, [(r.flow_id, r.id, r.subscriber_id) for r in runs]
        )


async def park(
    session: AsyncSession, claim: int, runs: Sequence[Run], until: dict[int, datetime], *, waiting: bool
) -> None:
    """The runs stay at their step until their time (a wait, a retry, the frequency cap), handed back."""
    by_time: dict[datetime, list[Run]] = defaultdict(list)
    for r in runs:
        by_time[until[r.id]].append(r)
    for at, group in by_time.items():
        await _guarded(
            session, claim, group, {"due_at": at, "waiting": waiting, "claim": None, "lease_until": None}
        )
        for r in group:
            r.live, r.waiting = False, waiting


async def _guarded(session: AsyncSession, claim: int, runs: Sequence[Run], values: dict[str, Any]) -> None:
    ids = [r.id for r in runs]
    result = await session.execute(
        update(FlowRun)
        .where(
            one_of(session, FlowRun.id, ids, BigInteger()),
            FlowRun.claim == claim,
            FlowRun.status == FlowRunStatus.ACTIVE,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if (result.rowcount or 0) != len(ids):  # type: ignore[attr-defined]
        raise LeaseLost(f"flow runs of claim {claim} were claimed again by another worker")
