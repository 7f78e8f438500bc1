"""The triggers the ticker evaluates: a date attribute's anniversary at a local time, and entering a segment
(incrementally: who already matched does not enter, who starts matching does, once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.automation import FlowRunStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.automation import triggers
from tests.support.factories import insert_list
from tests.support.flows import FlowWorld, make_flow, make_template, runs_of, send


async def evaluate(db: Database, now: datetime) -> int:
    with all_workspaces():
        return await triggers.evaluate_due(db, now, "UTC")


async def test_a_birthday_flow_starts_at_nine_on_each_persons_own_clock(db: Database) -> None:
    lst = await insert_list(db, "Members")
    tpl = await make_template(db, "<p>Happy birthday</p>", subject="Happy birthday {{ subscriber.name }}")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "DATE_ATTRIBUTE", "attribute": "birthday", "timeOfDay": "09:00"},
            "steps": [send("card", tpl)],
            "reentry": "ALWAYS",
        },
    )
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    async with db.transaction() as s:
        for name, born, zone in (
            ("tokyo", "1990-12-08", "Asia/Tokyo"),  # 09:00 on the 8th in Tokyo is 00:00 UTC on the 8th
            ("york", "1985-12-08", "America/New_York"),  # 14:00 UTC on the 8th
            ("later", "1970-12-25", "UTC"),  # weeks away: not yet
            ("past", "1999-12-07", "UTC"),  # 09:00 UTC today, before the flow first looked: next year
            ("junk", "not a date", "UTC"),
        ):
            await subscribers.create_subscriber(
                s, f"{name}@example.com", name, {"birthday": born, "timezone": zone}, list_ids=[lst]
            )
    await evaluate(db, now)
    await evaluate(db, now + timedelta(minutes=5))  # not its turn yet, and nobody twice anyway
    await evaluate(db, now + timedelta(hours=2))
    runs = {r.subscriber_id: r for r in await runs_of(db, flow)}
    async with db.session() as s:
        from sqlalchemy import select

        names = dict((await s.execute(select(Subscriber.id, Subscriber.name))).all())
    due = {names[sid]: r.due_at for sid, r in runs.items()}
    assert due == {
        "tokyo": datetime(2026, 12, 8, 0, 0, tzinfo=UTC),
        "york": datetime(2026, 12, 8, 14, 0, tzinfo=UTC),
    }
    world = FlowWorld(db)
    await world.settle(datetime(2026, 12, 8, 1, 0, tzinfo=UTC))
    assert world.sent_to() == {"tokyo@example.com": ["Happy birthday tokyo"]}


async def test_people_enter_when_they_start_matching_a_segment(db: Database) -> None:
    lst = await insert_list(db, "All")
    tpl = await make_template(db, "<p>Welcome to gold</p>", subject="Gold")
    async with db.transaction() as s:
        gold = await segments.create_segment(
            s,
            segments.SegmentInput(
                name="Gold", filter={"attribute": {"path": "plan", "op": "EQ", "value": "gold"}}
            ),
        )
        already = await subscribers.create_subscriber(
            s, "already@example.com", "A", {"plan": "gold"}, list_ids=[lst]
        )
        soon = await subscribers.create_subscriber(
            s, "soon@example.com", "S", {"plan": "free"}, list_ids=[lst]
        )
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SEGMENT_ENTERED", "segmentId": gold.id},
            "steps": [send("hi", tpl)],
            "reentry": "ALWAYS",
        },
    )
    now = utcnow()
    assert await evaluate(db, now) == 0  # the first look only records who is in
    async with db.transaction() as s:
        await s.execute(
            update(Subscriber)
            .where(Subscriber.id == soon.id)
            .values(attributes={"plan": "gold"}, updated_at=utcnow())
        )
    assert await evaluate(db, now + timedelta(seconds=5)) == 0  # not its turn yet
    assert await evaluate(db, now + timedelta(seconds=20)) == 1
    assert await evaluate(db, now + timedelta(seconds=40)) == 0  # still a member: no second entry
    assert [r.subscriber_id for r in await runs_of(db, flow)] == [soon.id]
    # Leaving and matching again is entering again.
    for plan, at in (("free", 60), ("gold", 80)):
        async with db.transaction() as s:
            await s.execute(
                update(Subscriber)
                .where(Subscriber.id == soon.id)
                .values(attributes={"plan": plan}, updated_at=utcnow())
            )
        await evaluate(db, now + timedelta(seconds=at))
    runs = await runs_of(db, flow)
    assert [r.subscriber_id for r in runs] == [soon.id, soon.id]
    assert already.id not in {r.subscriber_id for r in runs}
    world = FlowWorld(db)
    await world.settle()
    assert world.sent_to() == {"soon@example.com": ["Gold", "Gold"]}
    assert {r.status for r in await runs_of(db, flow)} == {FlowRunStatus.COMPLETED}
