"""Crash safety of flows, end to end: 2,000 people in a SEND → WAIT → SEND flow, real `emailkit worker`
processes on PostgreSQL and a private redis-server, sending into an SMTP sink that counts what it accepted;
one worker is SIGKILLed in the middle and a new one started.

Each step reaches each person exactly once, counted at the SMTP peer. The one allowance is the killed
worker's hand-over, as for campaigns: what it had committed as SENDING and not yet recorded becomes
IN_DOUBT (never sent again, and the run goes on to its next step).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from emailkit.db.engine import Database
from emailkit.db.tables.automation import Flow, FlowRun, FlowRunStatus, FlowStepRun, FlowStepRunStatus
from emailkit.providers.smtp import REPORT_EVERY
from tests.integration.test_crash_safety import (
    SMTP_POOL_SIZE,
    WORKER_THREADS,
    Stack,
    open_stack,
    ready,
)
from tests.support import import_job
from tests.support.factories import insert_list
from tests.support.flows import make_flow, make_template, send, wait
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink

pytestmark = [pytest.mark.crash, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

PEOPLE = 2000


@pytest.fixture
async def stack(
    db: Database, redis_server: RedisServer, sink: CountingSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with open_stack(Stack, db, redis_server, sink, tmp_path) as opened:
        yield opened


async def finished_runs(db: Database, flow_id: int) -> int:
    async with db.session() as s:
        stmt = select(func.count()).where(FlowRun.flow_id == flow_id, FlowRun.status != FlowRunStatus.ACTIVE)
        return int((await s.execute(stmt)).scalar_one())


async def wait_until_finished(stack: Stack, flow_id: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (done := await finished_runs(stack.db, flow_id)) < PEOPLE:
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {w.name}:\n{w.log(30)}" for w in stack.started)
            raise AssertionError(f"{done} of {PEOPLE} runs finished after {within}s\n{logs}")
        await asyncio.sleep(0.25)


async def test_a_worker_killed_mid_flow_neither_repeats_nor_drops_a_step(stack: Stack) -> None:
    booting = stack.spawn_workers(2)
    lst = await insert_list(stack.db, "Crash")
    first_tpl = await make_template(stack.db, "<p>One {{ subscriber.name }}</p>", subject="One")
    second_tpl = await make_template(stack.db, "<p>Two</p>", subject="Two")
    flow = await make_flow(
        stack.db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [send("one", first_tpl, "pause"), wait("pause", 2, "two"), send("two", second_tpl)],
        },
    )
    emails = [f"person{i:05d}@example.com" for i in range(PEOPLE)]
    csv = ("email,name\n" + "".join(f"{e},Person {i}\n" for i, e in enumerate(emails))).encode()
    first, second = await ready(booting)
    await import_job.run(stack.db, await import_job.start(stack.db, csv, list_ids=[lst]))
    await stack.sink.wait_until(lambda s: s.accepted_total >= 1200, within=60, what="1200 accepted")
    first.kill()
    await stack.workers(1)
    await wait_until_finished(stack, flow, 120)

    accepted = stack.sink.accepted()
    assert set(accepted) <= set(emails)
    async with stack.db.session() as s:
        rows = (
            await s.execute(
                select(FlowRun.subscriber_id, FlowStepRun.step_key, FlowStepRun.status)
                .join(FlowStepRun, FlowStepRun.run_id == FlowRun.id)
                .where(FlowRun.flow_id == flow, FlowStepRun.step_key.in_(["one", "two"]))
            )
        ).all()
        statuses = Counter((key, status) for _, key, status in rows)
        row = await s.get(Flow, flow)
    assert row is not None and (row.entered, row.completed, row.active) == (PEOPLE, PEOPLE, 0)
    in_doubt = statuses[("one", FlowStepRunStatus.IN_DOUBT)] + statuses[("two", FlowStepRunStatus.IN_DOUBT)]
    for key in ("one", "two"):
        # Every person passed every step: sent, or (the killed worker's hand-over) in doubt.
        assert statuses[(key, FlowStepRunStatus.SENT)] + statuses[(key, FlowStepRunStatus.IN_DOUBT)] == PEOPLE
    # Nobody got a step twice: two messages at most, and exactly two unless one of them is in doubt.
    assert max(accepted.values()) <= 2
    assert sum(accepted.values()) >= 2 * PEOPLE - in_doubt
    assert sum(accepted.values()) <= 2 * PEOPLE
    assert in_doubt <= WORKER_THREADS * 2 * REPORT_EVERY + SMTP_POOL_SIZE
    assert second.alive()
