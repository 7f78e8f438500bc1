"""A transactional delivery whose queue message was lost (a Redis restart) is enqueued again by the upkeep
ticker and sent once, however many copies of its job end up running."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text, update

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import dispatch, scheduler, transactional
from tests.integration.test_scheduler import RecordingQueue
from tests.support.environment import TEST_SECRET
from tests.support.transactional import outbox_runtime, receipts


async def queued_receipts(db: Database, count: int) -> list[int]:
    """Rows as sendTransactional commits them; their queue messages are never sent, as if lost."""
    return await receipts(db, [DeliveryStatus.QUEUED] * count)


def transactional_ids(queue: RecordingQueue) -> list[int]:
    return sorted(int(a["delivery_id"]) for j, a in queue.jobs if j == dispatch.SEND_TRANSACTIONAL_JOB)  # type: ignore[arg-type]


async def test_a_lost_transactional_message_is_enqueued_again_and_sent_once(
    db: Database, tmp_path: Path
) -> None:
    queue = RecordingQueue()
    runtime = outbox_runtime(db, tmp_path, queue)
    [lost] = await queued_receipts(db, 1)

    await scheduler.tick(runtime, utcnow() + timedelta(seconds=5))
    assert queue.jobs == []  # still within requeue_after: its message may just be waiting in the queue
    later = utcnow() + timedelta(seconds=61)
    await scheduler.tick(runtime, later)
    assert transactional_ids(queue) == [lost]
    # The ticker that enqueued it moved it forward: another ticker right after finds nothing to do.
    await scheduler.tick(runtime, later)
    assert transactional_ids(queue) == [lost]

    assert runtime.sending is not None
    result = await transactional.send_transactional(runtime, lost, max_attempts=3)
    assert result is not None and result.ok
    # The original message was only late after all: its run finds the mail sent.
    assert await transactional.send_transactional(runtime, lost, max_attempts=3) is None
    async with db.session() as s:
        row = await s.get(Delivery, lost)
        assert row is not None and row.status is DeliveryStatus.SENT
    assert [p.name for p in tmp_path.rglob("*.eml")] == [f"{lost}.eml"]
    await scheduler.tick(runtime, later + timedelta(hours=1))
    assert transactional_ids(queue) == [lost]  # sent mail is never enqueued again
    await runtime.sending.close()


async def test_a_transactional_mail_queued_too_long_ago_is_not_sent_late(db: Database) -> None:
    queue = RecordingQueue()
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=queue)
    [old] = await queued_receipts(db, 1)
    await scheduler.tick(runtime, utcnow() + scheduler.TRANSACTIONAL_MAX_AGE + timedelta(minutes=1))
    assert queue.jobs == []
    async with db.session() as s:
        row = await s.get(Delivery, old)
        assert row is not None and row.status is DeliveryStatus.QUEUED


async def test_two_copies_of_a_job_running_at_once_send_one_mail(db: Database, tmp_path: Path) -> None:
    runtime = outbox_runtime(db, tmp_path, RecordingQueue())
    ids = await queued_receipts(db, 5)

    results = await asyncio.gather(
        *(transactional.send_transactional(runtime, i, max_attempts=3) for i in ids for _ in range(2))
    )
    assert sum(1 for r in results if r is not None and r.ok) == len(ids)
    assert sum(1 for r in results if r is None) == len(ids)
    assert sorted(p.name for p in tmp_path.rglob("*.eml")) == sorted(f"{i}.eml" for i in ids)
    async with db.session() as s:
        for i in ids:
            row = await s.get(Delivery, i)
            assert row is not None and (row.status, row.attempts) == (DeliveryStatus.SENT, 1)
    assert runtime.sending is not None
    await runtime.sending.close()


@pytest.mark.postgresql_only
async def test_the_sweep_reads_only_the_transactional_index_even_under_a_generic_plan(db: Database) -> None:
    """A flow's deliveries have no campaign either: the sweep must not walk them. Its reads, exactly as sent,
    planned generically (as asyncpg's prepared statements end up) with scans left only to indexes, use the
    partial index of migration 0021; a bound status or a differently spelled predicate would not match it."""
    [lost, flow_owned] = await queued_receipts(db, 2)
    async with db.transaction() as s:
        await s.execute(update(Delivery).where(Delivery.id == flow_owned).values(flow_run_id=1))
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "deliveries" in statement:
            statements.append((statement, parameters))

    queue = RecordingQueue()
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=queue)
    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await scheduler.requeue_lost_transactional(runtime, utcnow() + timedelta(seconds=61), 60) == [
            lost
        ]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert transactional_ids(queue) == [lost]
    assert len(statements) == 2  # the read and the claim
    async with db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        (sql, parameters), _claim = statements
        await conn.exec_driver_sql("PREPARE sweep AS " + sql)
        # EXECUTE takes no bind parameters: the values go in as literals (strings, instants and numbers here).
        values = ", ".join(str(v) if isinstance(v, int) else f"'{v}'" for v in parameters)
        explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE sweep({values})")
        plan = "\n".join(explained.scalars())
    assert "ix_deliveries_transactional_queued" in plan, plan
