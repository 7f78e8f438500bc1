"""Warm-up per sender: a campaign through a warming sender hands over exactly today's allowance, says so with
an ETA, and goes on by itself once the day turns; workers share the allowance; a flow's SEND step waits for
tomorrow's. Real SMTP servers (aiosmtpd), both databases; the days move with the senders' clocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowStepRun
from emailkit.db.tables.senders import Sender
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.audience import subscribers
from emailkit.domain.automation.entry import TrackedEvent, events_tracked
from emailkit.domain.runtime import Runtime, campaign_sender
from emailkit.domain.senders import store
from emailkit.domain.senders.routing import SenderProviders
from emailkit.domain.sending import lifecycle
from tests.integration.test_senders_sending import make_sender, runtime_for, seed, status_of
from tests.support.environment import TEST_SECRET
from tests.support.factories import insert_list
from tests.support.flows import FlowWorld, make_flow, make_template, send
from tests.support.smtp_provider import Sink, smtp_server

DAY0 = date(2030, 1, 7)


def at(day: int, hour: int = 10) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=day), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=hour
    )


async def plan(runtime: Runtime, sender_id: int, start: int, growth: float, ceiling: int) -> None:
    assert runtime.sender_factory is not None
    async with runtime.db.transaction() as s:
        await store.update_sender(
            s,
            sender_id,
            store.SenderInput(warmup=store.WarmupInput(start, growth, ceiling, DAY0)),
            instance_secret=TEST_SECRET,
            build=runtime.sender_factory,
            allow_private=True,
        )


async def start(db: Database, campaign_id: int) -> list[int]:
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=7)
    return list(batch_ids)


async def run_day(runtime: Runtime, batch_ids: list[int], now: datetime) -> None:
    """Every batch once, all at once, with the sender's clock at `now` (as the ticker would run them)."""
    sender = campaign_sender(runtime)
    sender.clock = lambda: now
    await asyncio.gather(*(sender.run_batch(b) for b in batch_ids))


async def sent_count(db: Database, campaign_id: int) -> int:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row.sent_count


async def test_a_campaign_over_the_allowance_goes_on_day_by_day(db: Database, tmp_path: Path) -> None:
    """10 a day growing 50%: a campaign of 30 sends 10 on its first day, 15 on the next, the last 5 the day
    after, and is FINISHED then; meanwhile it stays RUNNING and says when it continues and when it will end."""
    runtime = runtime_for(db, tmp_path)
    sink = Sink()
    try:
        async with smtp_server(sink) as port:
            sender_id = await make_sender(runtime, "Warming", port)
            await plan(runtime, sender_id, 10, 50.0, 30)
            campaign_id, emails = await seed(db, "w", 30, campaign_sender=sender_id, list_sender=None)
            batches = await start(db, campaign_id)

            await run_day(runtime, batches, at(0))
            assert len(sink.recipients()) == 10 and await sent_count(db, campaign_id) == 10
            assert await status_of(db, campaign_id) == (
                CampaignStatus.RUNNING,
                "Sender warm-up: 10 of 10 today; continues at 2030-01-08 00:00 UTC (ETA for the rest: "
                "2030-01-09)",
            )
            async with db.session() as s:
                statuses = set(
                    (
                        await s.execute(select(Delivery.status).where(Delivery.campaign_id == campaign_id))
                    ).scalars()
                )
            # Nothing failed: what was materialised and not sent waits QUEUED.
            assert statuses == {DeliveryStatus.SENT, DeliveryStatus.QUEUED}
            # Later the same day: nothing more goes.
            await run_day(runtime, batches, at(0, 23))
            assert len(sink.recipients()) == 10

            await run_day(runtime, batches, at(1))
            assert len(sink.recipients()) == 25
            status, reason = await status_of(db, campaign_id)
            assert status is CampaignStatus.RUNNING
            assert reason == (
                "Sender warm-up: 15 of 15 today; continues at 2030-01-09 00:00 UTC (ETA for the rest: "
                "2030-01-09)"
            )

            await run_day(runtime, batches, at(2))
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sorted(sink.recipients()) == emails
    assert await status_of(db, campaign_id) == (CampaignStatus.FINISHED, None)
    async with db.session() as s:
        row = await s.get(Sender, sender_id)
        assert row is not None and (row.warmup_day, row.warmup_sent) == (DAY0 + timedelta(days=2), 5)


async def test_two_workers_share_the_allowance(db: Database, tmp_path: Path) -> None:
    """Two worker processes (each its own sender providers and connections) run two campaigns through one
    warming sender at once: together they hand over exactly the day's allowance, no more."""
    first, second = runtime_for(db, tmp_path / "one"), runtime_for(db, tmp_path / "two")
    sink = Sink()
    try:
        async with smtp_server(sink) as port:
            sender_id = await make_sender(first, "Shared", port)
            await plan(first, sender_id, 23, 0.0, 23)
            a, _ = await seed(db, "a", 40, campaign_sender=sender_id, list_sender=None)
            b, _ = await seed(db, "b", 40, campaign_sender=sender_id, list_sender=None)
            batches_a, batches_b = await start(db, a), await start(db, b)
            await asyncio.gather(
                run_day(first, batches_a + batches_b[::2], at(0)),
                run_day(second, batches_b + batches_a[::-1], at(0)),
            )
    finally:
        for runtime in (first, second):
            assert runtime.sending is not None
            await runtime.sending.close()
    assert len(sink.recipients()) == 23
    assert await sent_count(db, a) + await sent_count(db, b) == 23
    for campaign_id in (a, b):
        status, reason = await status_of(db, campaign_id)
        assert status is CampaignStatus.RUNNING and (reason or "").startswith(
            "Sender warm-up: 23 of 23 today"
        )


async def test_a_sender_without_a_plan_costs_no_statement(db: Database, tmp_path: Path) -> None:
    """The default path: without a plan the sender's row is read once per batch run (to pick its provider, as
    before) and never written or locked for the warm-up."""
    runtime = runtime_for(db, tmp_path)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    sink = Sink()
    engine = db.engine.sync_engine
    try:
        async with smtp_server(sink) as port:
            sender_id = await make_sender(runtime, "Plain", port)
            campaign_id, emails = await seed(db, "p", 20, campaign_sender=sender_id, list_sender=None)
            batches = await start(db, campaign_id)
            event.listen(engine, "before_cursor_execute", seen)
            try:
                await run_day(runtime, batches, at(0))
            finally:
                event.remove(engine, "before_cursor_execute", seen)
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sorted(sink.recipients()) == emails
    on_senders = [s for s in statements if "from senders" in s or s.startswith("update senders")]
    assert len(on_senders) == len(batches)
    assert all(s.startswith("select") and "for update" not in s for s in on_senders)


async def test_a_flow_send_step_over_the_allowance_waits_for_the_next_day(
    db: Database, tmp_path: Path
) -> None:
    runtime = runtime_for(db, tmp_path)
    assert runtime.sender_factory is not None
    sink = Sink()
    async with smtp_server(sink) as port:
        sender_id = await make_sender(runtime, "Flows", port)
        await plan(runtime, sender_id, 2, 0.0, 2)
        lst = await insert_list(db, "Shop")
        thanks = await make_template(db, "<p>Thanks</p>", subject="Thanks")
        await make_flow(
            db,
            {
                "trigger": {"type": "EVENT", "eventName": "order.completed"},
                "steps": [send("thanks", thanks, None, senderId=sender_id)],
            },
        )
        async with db.transaction() as s:
            people = [
                await subscribers.create_subscriber(s, f"p{i}@example.com", f"P{i}", {}, list_ids=[lst])
                for i in range(3)
            ]
            await events_tracked(
                s,
                1,
                [TrackedEvent(10 + i, p.id, "order.completed", {}, at(0, 9)) for i, p in enumerate(people)],
            )
        world = FlowWorld(db)
        step_sender = world.runner.sender
        assert step_sender is not None
        step_sender.senders = SenderProviders(
            db, TEST_SECRET, default=step_sender.senders.default, build=runtime.sender_factory
        )
        try:
            await world.settle(at(0))
            assert len(sink.recipients()) == 2
            async with db.session() as s:
                details = (await s.execute(select(FlowStepRun.detail))).scalars().all()
            assert "sender warm-up: waiting until 2030-01-08T00:00:00+00:00" in details
            # Still the same day: the third waits.
            await world.settle(at(0, 23))
            assert len(sink.recipients()) == 2
            await world.settle(at(1, 0) + timedelta(minutes=1))
        finally:
            await step_sender.senders.close()
    assert sorted(sink.recipients()) == ["p0@example.com", "p1@example.com", "p2@example.com"]
