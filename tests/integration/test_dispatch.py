"""Commit, then enqueue: only the run that committed hands its jobs to the queue, once."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList
from emailkit.domain.sending import dispatch
from emailkit.domain.sending.jobs import Jobs
from tests.integration.test_scheduler import RecordingQueue, runtime_for

REFUSED = text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")


@pytest.mark.postgresql_only
async def test_a_run_refused_for_a_concurrent_change_enqueues_nothing_and_the_rerun_enqueues_once(
    db: Database,
) -> None:
    queue = RecordingQueue()
    runs = 0

    async def work(s: AsyncSession) -> tuple[int, Jobs]:
        nonlocal runs
        runs += 1
        s.add(MailingList(name=f"run {runs}"))
        await s.flush()
        if runs == 1:
            await s.execute(REFUSED)
        return runs, Jobs(batch_ids=[100 + runs])

    dispatched = await dispatch.commit_then_enqueue(runtime_for(db, queue), work)

    assert runs == 2
    assert (dispatched.value, dispatched.queue_error) == (2, None)
    assert queue.batch_ids() == [102]
    async with db.session() as s:
        assert list((await s.execute(select(MailingList.name))).scalars()) == ["run 2"]
