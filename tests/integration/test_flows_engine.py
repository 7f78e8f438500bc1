"""Flows through the ticker's claims and the runner, on both backends: entry, each step type, the exit
condition, re-entry, exactly-once after a worker died, and an unsubscribe in the middle of a wait."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.db.dialect import pg_driver
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.audience import Subscriber, SubscriberStatus
from emailkit.db.tables.automation import Flow, FlowRun, FlowRunStatus, FlowStepRun, FlowStepStats
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import EventType
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import subscribers
from emailkit.domain.automation import claims, ledger_pg
from emailkit.domain.automation import runs as run_rows
from emailkit.domain.automation.entry import TrackedEvent, events_tracked
from emailkit.domain.automation.send_step import StepSender
from emailkit.domain.feedback import IncomingEvent, record_events
from tests.support.factories import insert_list
from tests.support.flows import FROM as FROM_ADDRESS
from tests.support.flows import FlowWorld, ledger_of, make_flow, make_template, runs_of, send, wait


async def people(db: Database, list_id: int, *names: str) -> list[int]:
    ids = []
    async with db.transaction() as s:
        for name in names:
            row = await subscribers.create_subscriber(
                s, f"{name}@example.com", name.title(), list_ids=[list_id]
            )
            ids.append(row.id)
    return ids


async def welcome(db: Database) -> tuple[int, int]:
    lst = await insert_list(db, "Welcome")
    first = await make_template(
        db, "<p>Hi {{ subscriber.name }}</p>", subject="Welcome {{ subscriber.name }}"
    )
    second = await make_template(db, "<p>Day two</p>", subject="Day two")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [send("hello", first, "pause"), wait("pause", 10, "again"), send("again", second)],
        },
    )
    return lst, flow


async def test_a_welcome_series_sends_each_step_once_and_honours_the_wait(db: Database) -> None:
    lst, flow = await welcome(db)
    await people(db, lst, "ada", "bob")
    world = FlowWorld(db)
    await world.settle()
    assert world.sent_to() == {"ada@example.com": ["Welcome Ada"], "bob@example.com": ["Welcome Bob"]}
    # Nothing more until the wait is over, however often the ticker runs.
    await world.settle()
    assert len(world.provider.messages) == 2
    await world.settle(world.later(11))
    assert world.sent_to() == {
        "ada@example.com": ["Welcome Ada", "Day two"],
        "bob@example.com": ["Welcome Bob", "Day two"],
    }
    runs = await runs_of(db, flow)
    assert [r.status for r in runs] == [FlowRunStatus.COMPLETED] * 2
    assert await ledger_of(db, runs[0].id) == [
        ("hello", 1, "SENT"),
        ("pause", 2, "DONE"),
        ("again", 3, "SENT"),
    ]
    async with db.session() as s:
        row = await s.get(Flow, flow)
        assert row is not None
        assert (row.entered, row.active, row.completed, row.exited) == (2, 0, 2, 0)
        stats = {st.step_key: st for st in (await s.execute(select(FlowStepStats))).scalars()}
    assert (stats["hello"].entered, stats["hello"].sent, stats["again"].sent) == (2, 2, 2)
    assert (stats["pause"].entered, stats["pause"].completed) == (2, 2)


async def test_a_message_that_cannot_be_rendered_fails_alone_and_the_run_goes_on(db: Database) -> None:
    lst = await insert_list(db, "Quotas")
    share = await make_template(
        db, "<p>Your share: {{ 100 // subscriber.attributes.n }}</p>", subject="Share"
    )
    bye = await make_template(db, "<p>Bye</p>", subject="Bye")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [send("share", share, "bye"), send("bye", bye)],
        },
    )
    async with db.transaction() as s:
        for name, n in (("ada", 0), ("bob", 4)):
            await subscribers.create_subscriber(
                s, f"{name}@example.com", name.title(), {"n": n}, list_ids=[lst]
            )
    world = FlowWorld(db)
    await world.settle()
    assert world.sent_to() == {"ada@example.com": ["Bye"], "bob@example.com": ["Share", "Bye"]}
    async with db.session() as s:
        ada = (
            await s.execute(
                select(Delivery.status, Delivery.last_error).where(
                    Delivery.email == "ada@example.com", Delivery.template_id == share
                )
            )
        ).one()
    # The delivery says so too (it never reached the provider, and is not left QUEUED).
    assert ada.status is DeliveryStatus.FAILED and ada.last_error
    runs = {r.subscriber_id: r for r in await runs_of(db, flow)}
    ledgers = sorted([await ledger_of(db, r.id) for r in runs.values()])
    assert ledgers == [
        [("share", 1, "FAILED"), ("bye", 2, "SENT")],
        [("share", 1, "SENT"), ("bye", 2, "SENT")],
    ]


async def test_a_message_a_dead_worker_was_handing_over_is_in_doubt_and_never_sent_again(
    db: Database,
) -> None:
    lst, flow = await welcome(db)
    await people(db, lst, "ada")
    world = FlowWorld(db)
    # The first worker got as far as marking the message SENDING, then died: its claim's lease lapses.
    await world.tick()
    async with db.transaction() as s:
        await s.execute(update(Delivery).values(status=DeliveryStatus.SENDING, sent_at=None))
        await s.execute(update(FlowStepRun).where(FlowStepRun.step_key == "hello").values(status="PENDING"))
        run = (await runs_of(db, flow))[0]
    async with db.transaction() as s:
        from emailkit.db.tables.automation import FlowRun

        await s.execute(update(FlowRun).values(step_key="hello", visit=1, waiting=False, due_at=utcnow()))
    sent_before = len(world.provider.messages)
    await world.settle(world.later(1))
    assert len(world.provider.messages) == sent_before  # not handed over again
    assert (await ledger_of(db, run.id))[0] == ("hello", 1, "IN_DOUBT")
    async with db.session() as s:
        assert (await s.execute(select(Delivery.status))).scalars().all() == [DeliveryStatus.IN_DOUBT]


async def test_a_worker_that_died_after_recording_the_send_leaves_it_sent_once_and_the_run_moves_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst, flow = await welcome(db)
    await people(db, lst, "ada", "bob")
    world = FlowWorld(db)
    # The deliveries were committed SENT as their results came back; the worker died before settling the runs.
    died = RuntimeError("the worker died")

    async def die(*args: object) -> None:
        raise died

    monkeypatch.setattr(StepSender, "_settle_sent", die)
    with pytest.raises(RuntimeError):
        await world.tick()
    monkeypatch.undo()
    async with db.session() as s:
        assert set((await s.execute(select(Delivery.status))).scalars()) == {DeliveryStatus.SENT}
    sent_before = len(world.provider.messages)
    assert sent_before == 2
    # Its claim's lease lapses; whoever takes the runs settles them as sent, and they go on to the wait.
    await world.settle(world.later(200))
    assert len(world.provider.messages) == sent_before  # not handed over again
    await world.settle(world.later(300))
    assert len(world.provider.messages) == sent_before + 2  # only the second step, after the wait
    for run in await runs_of(db, flow):
        assert await ledger_of(db, run.id) == [
            ("hello", 1, "SENT"),
            ("pause", 2, "DONE"),
            ("again", 3, "SENT"),
        ]
    async with db.session() as s:
        stats = {st.step_key: st for st in (await s.execute(select(FlowStepStats))).scalars()}
    assert (stats["hello"].entered, stats["hello"].sent, stats["hello"].completed) == (2, 2, 2)


async def test_unsubscribing_during_the_wait_stops_the_flow(db: Database) -> None:
    lst, flow = await welcome(db)
    [ada] = await people(db, lst, "ada")
    world = FlowWorld(db)
    await world.settle()
    async with db.transaction() as s:
        await subscribers.unsubscribe_from_lists(s, [ada], [lst])
    await world.settle(world.later(11))
    assert world.sent_to() == {"ada@example.com": ["Welcome Ada"]}
    [run] = await runs_of(db, flow)
    assert (run.status, run.exit_reason) == (FlowRunStatus.EXITED, "unsubscribed")
    assert (await ledger_of(db, run.id))[-1] == ("again", 3, "SKIPPED")


async def test_a_blocklisted_person_gets_nothing_and_leaves(db: Database) -> None:
    lst, flow = await welcome(db)
    [_ada] = await people(db, lst, "ada")
    async with db.transaction() as s:
        await s.execute(update(Subscriber).values(status=SubscriberStatus.BLOCKLISTED))
    world = FlowWorld(db)
    await world.settle()
    assert world.provider.messages == []
    [run] = await runs_of(db, flow)
    assert (run.status, run.exit_reason) == (FlowRunStatus.EXITED, "blocklisted")


async def test_branch_update_and_exit_steps(db: Database) -> None:
    lst = await insert_list(db, "Shop")
    vip_list = await insert_list(db, "VIP")
    tpl = await make_template(db, "<p>Welcome, VIP</p>", subject="VIP")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [
                {
                    "key": "vip",
                    "type": "BRANCH",
                    "condition": {"attribute": {"path": "plan", "op": "EQ", "value": "gold"}},
                    "then": "tag",
                    "otherwise": "stop",
                },
                {
                    "key": "tag",
                    "type": "UPDATE",
                    "setAttributes": {"vip": True},
                    "addListIds": [vip_list],
                    "next": "mail",
                },
                send("mail", tpl),
                {"key": "stop", "type": "EXIT"},
            ],
        },
    )
    async with db.transaction() as s:
        await subscribers.create_subscriber(s, "gold@example.com", "Gold", {"plan": "gold"}, list_ids=[lst])
        await subscribers.create_subscriber(s, "free@example.com", "Free", {"plan": "free"}, list_ids=[lst])
    world = FlowWorld(db)
    await world.settle()
    assert world.sent_to() == {"gold@example.com": ["VIP"]}
    async with db.session() as s:
        gold = (
            await s.execute(select(Subscriber).where(Subscriber.email == "gold@example.com"))
        ).scalar_one()
        assert gold.attributes == {"plan": "gold", "vip": True}
    runs = {r.subscriber_id: r for r in await runs_of(db, flow)}
    assert runs[gold.id].status is FlowRunStatus.COMPLETED
    others = [r for sid, r in runs.items() if sid != gold.id]
    assert [(r.status, r.exit_reason) for r in others] == [(FlowRunStatus.EXITED, "exit_step")]
    assert await ledger_of(db, others[0].id) == [("vip", 1, "DONE"), ("stop", 2, "DONE")]


async def test_the_exit_condition_takes_people_out_before_their_next_step(db: Database) -> None:
    lst = await insert_list(db, "Trial")
    tpl = await make_template(db, "<p>Buy now</p>", subject="Buy")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [wait("w", 60, "nag"), send("nag", tpl)],
            "exitWhen": {"attribute": {"path": "bought", "op": "EQ", "value": True}},
        },
    )
    [ada, _bob] = await people(db, lst, "ada", "bob")
    world = FlowWorld(db)
    await world.settle()
    async with db.transaction() as s:
        await s.execute(update(Subscriber).where(Subscriber.id == ada).values(attributes={"bought": True}))
    await world.settle(world.later(61))
    assert world.sent_to() == {"bob@example.com": ["Buy"]}
    runs = {r.subscriber_id: r for r in await runs_of(db, flow)}
    assert (runs[ada].status, runs[ada].exit_reason) == (FlowRunStatus.EXITED, "exit_condition")


async def test_reentry_policies(db: Database) -> None:
    lst = await insert_list(db, "Events")
    tpl = await make_template(
        db, "<p>{{ event.properties.item }}</p>", subject="Thanks for {{ event.properties.item }}"
    )
    flows = {}
    for policy in ("ONCE", "ALWAYS", "AFTER_SECONDS"):
        definition = {
            "trigger": {"type": "EVENT", "eventName": f"bought-{policy}"},
            "steps": [send("thanks", tpl)],
            "reentry": policy,
            **({"reentrySeconds": 3600} if policy == "AFTER_SECONDS" else {}),
        }
        flows[policy] = await make_flow(db, definition)
    [ada] = await people(db, lst, "ada")
    for i in range(2):
        async with db.transaction() as s:
            events = [
                TrackedEvent(100 + i * 10 + n, ada, f"bought-{p}", {"item": f"item{i}"}, utcnow())
                for n, p in enumerate(flows)
            ]
            await events_tracked(s, 1, events)
            # The same event told twice enters nobody twice.
            await events_tracked(s, 1, events)
    counts = {p: len(await runs_of(db, f)) for p, f in flows.items()}
    assert counts == {"ONCE": 1, "ALWAYS": 2, "AFTER_SECONDS": 1}
    world = FlowWorld(db)
    await world.settle()
    assert sorted(world.sent_to()["ada@example.com"]) == sorted(
        ["Thanks for item0", "Thanks for item0", "Thanks for item1", "Thanks for item0"]
    )


async def test_a_paused_flow_moves_nobody_until_resumed(db: Database) -> None:
    from emailkit.domain.automation import flows as flow_service

    lst, flow = await welcome(db)
    async with db.transaction() as s:
        await flow_service.move_flow(s, flow, "pause")
    await people(db, lst, "ada")
    world = FlowWorld(db)
    await world.settle()
    assert world.provider.messages == []  # nobody entered a paused flow
    assert await runs_of(db, flow) == []
    async with db.transaction() as s:
        await flow_service.move_flow(s, flow, "resume")
    await people(db, lst, "bob")
    await world.settle()
    assert world.sent_to() == {"bob@example.com": ["Welcome Bob"]}


async def test_claims_are_not_taken_twice(db: Database) -> None:
    lst, _ = await welcome(db)
    await people(db, lst, "ada", "bob", "cy")
    world = FlowWorld(db)
    from emailkit.db.scope import all_workspaces

    with all_workspaces():
        first = await claims.dispatch_due_runs(world.runtime, utcnow(), hold=60)
        second = await claims.dispatch_due_runs(world.runtime, utcnow(), hold=60)
    assert sum(c.runs for c in first) == 3 and second == []


async def test_the_ticker_keeps_as_many_claims_waiting_as_are_being_worked_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims wait in the queue up to the number being worked on (at rest, MIN_QUEUED): each worker that takes
    one makes room for another, however many workers there are; a claim whose hold runs out in the queue no
    longer counts, and its runs are claimed again."""
    lst, _ = await welcome(db)
    await people(db, lst, *[f"p{i}" for i in range(12)])
    monkeypatch.setattr(claims, "CHUNK", 2)
    monkeypatch.setattr(claims, "MIN_QUEUED", 1)
    world = FlowWorld(db)

    async def tick(at: datetime | None = None) -> list[claims.Claim]:
        return await claims.dispatch_due_runs(world.runtime, at or utcnow(), hold=60)

    async def take(claim: claims.Claim) -> None:
        async with db.transaction() as s:
            held = await run_rows.take(s, claim.workspace_id, claim.claim, utcnow(), 30)
        assert len(held.runs) == claim.runs

    with all_workspaces():
        first = await tick()
        waiting = await tick()  # one claim waits, none is worked on: nothing more
        await take(first[0])
        second = await tick()  # one worked on, none waiting: one more
        await take(second[0])
        third = await tick()  # two worked on: two waiting
        full = await tick()
        # Every hold and lease has run out (lost jobs, dead workers): back to one, the runs claimed again.
        again = await tick(utcnow() + timedelta(seconds=61))
    assert [c.runs for c in first] == [2] and waiting == []
    assert [c.runs for c in second] == [2]
    assert [c.runs for c in third] == [2, 2] and full == []
    assert [c.runs for c in again] == [2]


async def _dispatch_recording(
    db: Database, now: datetime
) -> tuple[list[claims.Claim], list[tuple[str, Any]]]:
    """One dispatch of due runs across workspaces, with every statement it sent (and its parameters)."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        with all_workspaces():
            made = await claims.dispatch_due_runs(FlowWorld(db).runtime, now, hold=60)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    return made, statements


class _AtStep(NamedTuple):
    id: int
    flow_id: int
    step_key: str
    visit: int


def _due_read(statements: list[tuple[str, Any]]) -> int:
    """Where the ticker's read of due runs stands among `statements`."""
    return next(
        i for i, (sql, _) in enumerate(statements) if "FROM flow_runs" in sql and "SKIP LOCKED" in sql
    )


async def _explain_prepared(conn: AsyncConnection, sql: str, parameters: Any) -> str:
    """The plan of `sql` as a prepared statement executed with `parameters` (on `conn`, in its settings)."""
    await conn.exec_driver_sql("PREPARE planned AS " + sql)
    # EXECUTE takes no bind parameters: the values go in as literals (strings, instants and numbers here).
    values = ", ".join(str(v) if isinstance(v, int) else f"'{v}'" for v in parameters)
    plan = "\n".join((await conn.exec_driver_sql(f"EXPLAIN EXECUTE planned({values})")).scalars())
    await conn.exec_driver_sql("DEALLOCATE planned")
    return plan


@pytest.mark.postgresql_only
async def test_the_tickers_read_of_due_runs_uses_the_due_index_even_under_a_generic_plan(
    db: Database,
) -> None:
    """The read, exactly as sent, planned generically (as asyncpg's prepared statements end up) with scans left
    only to indexes, goes through the partial index of due ACTIVE runs: with the status as a bound parameter
    it could not, and every tick read every run of the table."""
    lst, _ = await welcome(db)
    await people(db, lst, "ada")
    made, statements = await _dispatch_recording(db, utcnow())
    assert made
    sql, parameters = statements[_due_read(statements)]
    async with db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await _explain_prepared(conn, sql, parameters)
    assert "ix_flow_runs_due" in plan, plan


@pytest.mark.postgresql_only
async def test_the_ticker_walks_the_due_index_in_order_past_claimed_runs_instead_of_sorting_every_due_run(
    db: Database,
) -> None:
    """Thousands of due runs, the earliest of them under a live claim: the read of the next chunk walks the due
    index in order and stops at the chunk, as the claim's own transaction plans it, without JIT. Under the
    workspace policy the planner expected a handful of due runs, read and sorted all of them at every tick, and
    JIT-compiled the read at every tick once the table was large."""
    _, flow = await welcome(db)
    now = utcnow()
    claimed, unclaimed = 1500, 4500
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(
                text(
                    """
                    INSERT INTO flow_runs (workspace_id, flow_id, version_id, subscriber_id, status, step_key,
                        visit, waiting, due_at, claim, lease_until, entry_key, entered_at)
                    SELECT f.workspace_id, f.id, v.id, n, 'ACTIVE', 'hello', 1, false,
                        CAST(:now AS timestamptz) - interval '1 hour' + n * interval '1 millisecond',
                        CASE WHEN n <= :claimed THEN 42 END,
                        CASE WHEN n <= :claimed THEN CAST(:now AS timestamptz) + interval '1 hour' END, '', :now
                    FROM flows AS f JOIN flow_versions AS v ON v.flow_id = f.id,
                        generate_series(1, :total) AS n
                    WHERE f.id = :flow
                    """
                ),
                {"now": now, "claimed": claimed, "total": claimed + unclaimed, "flow": flow},
            )
            await s.execute(
                text(
                    "INSERT INTO flow_claims (id, run_ids, runs, lease_until, workspace_id) "
                    "SELECT 42, '[]', :claimed, CAST(:now AS timestamptz) + interval '1 hour', workspace_id FROM flows WHERE id = :flow"
                ),
                {"now": now, "claimed": claimed, "flow": flow},
            )
            # As autovacuum would have by then: with these statistics the read was a scan and sort of every run.
            await s.execute(text("ANALYZE flow_runs, flow_claims, flows"))
    made, statements = await _dispatch_recording(db, now)
    # The earliest due runs that were free, in order.
    assert made and made[0].runs == claims.CHUNK
    async with db.session() as s:
        first = (
            (
                await s.execute(
                    select(FlowRun.subscriber_id)
                    .where(FlowRun.claim == made[0].claim)
                    .order_by(FlowRun.due_at)
                )
            )
            .scalars()
            .all()
        )
    assert first == list(range(claimed + 1, claimed + 1 + claims.CHUNK))
    # The due read as the claim's transaction planned it: the settings it made before it, then the read.
    due = _due_read(statements)
    start = max(i for i, (sql, _) in enumerate(statements[:due]) if "DELETE FROM flow_claims" in sql)
    with all_workspaces():
        async with db.engine.begin() as conn:
            # However cheap the read, JIT would compile it at this threshold (the misestimate prices it far
            # above the default one at 100,000 runs), unless the claim's transaction turns JIT off.
            await conn.exec_driver_sql("SET LOCAL jit_above_cost = 0")
            jit = await conn.scalar(text("SELECT pg_jit_available()"))
            compiled = await _explain_prepared(conn, *statements[due])
            for sql, parameters in statements[start + 1 : due]:
                await conn.exec_driver_sql(sql, parameters)
            plan = await _explain_prepared(conn, *statements[due])
    assert "Index Scan using ix_flow_runs_due" in plan, plan
    assert "Sort" not in plan and "Bitmap" not in plan and "Seq Scan on flow_runs" not in plan, plan
    if jit:  # where the server has JIT (this machine's does), its setting is what keeps it out
        assert "JIT" in compiled and "JIT" not in plan, plan


@pytest.mark.postgresql_only
async def test_a_send_groups_read_of_its_ledger_rows_probes_the_unique_index_whatever_the_ledgers_size(
    db: Database,
) -> None:
    """The read a SEND step makes of its group's existing ledger rows, as sent, on a ledger of 60,000 rows with
    fresh statistics: 1,000 probes of the unique index. As a join, the planner hashed the whole ledger instead
    (until it held ≈150,000 rows), at every group."""
    _, flow = await welcome(db)
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(
                text(
                    """
                    INSERT INTO flow_step_runs (workspace_id, run_id, flow_id, step_key, visit, status, attempts,
                        started_at)
                    SELECT f.workspace_id, n, f.id, 'hello', 1, 'SENT', 0, now()
                    FROM flows AS f, generate_series(1, 60000) AS n WHERE f.id = :flow
                    """
                ),
                {"flow": flow},
            )
            await s.execute(text("ANALYZE flow_step_runs"))
        async with db.transaction() as s:
            driver = await pg_driver(s)
            runs = list(range(59_501, 60_501))  # half of them have rows
            plan = "\n".join(
                r[0]
                for r in await driver.fetch(
                    "EXPLAIN " + ledger_pg._EXISTING_STEPS, runs, ["hello"] * len(runs), [1] * len(runs)
                )
            )
            found = await ledger_pg.existing_steps(s, [_AtStep(r, flow, "hello", 1) for r in runs])
    assert "Index Scan using uq_flow_step_runs_run_id" in plan, plan
    assert "Hash" not in plan and "Seq Scan on flow_step_runs" not in plan, plan
    assert sorted(run for _, run, _, _ in found) == list(range(59_501, 60_001))


async def test_a_branch_on_whether_the_email_of_a_step_was_opened(db: Database) -> None:
    lst = await insert_list(db, "Onboarding")
    hello = await make_template(db, "<p>Hello</p>", subject="Hello")
    nudge = await make_template(db, "<p>Did you see it?</p>", subject="Nudge")
    thanks = await make_template(db, "<p>Thanks for reading</p>", subject="Thanks")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [
                send("hello", hello, "w"),
                wait("w", 3600, "opened"),
                {
                    "key": "opened",
                    "type": "BRANCH",
                    "condition": {"engagement": {"event": "OPENED", "flowStep": "hello"}},
                    "then": "thanks",
                    "otherwise": "nudge",
                },
                send("thanks", thanks),
                send("nudge", nudge),
            ],
        },
    )
    [ada, _] = await people(db, lst, "ada", "bob")
    world = FlowWorld(db)
    await world.settle()
    async with db.session() as s:
        ada_delivery = (
            await s.execute(select(Delivery.id).where(Delivery.subscriber_id == ada))
        ).scalar_one()
    await record_events(db, [IncomingEvent(type=EventType.OPEN, delivery_id=ada_delivery)] * 2)
    await world.settle(world.later(3601))
    assert world.sent_to() == {"ada@example.com": ["Hello", "Thanks"], "bob@example.com": ["Hello", "Nudge"]}
    async with db.session() as s:
        stats = {st.step_key: st for st in (await s.execute(select(FlowStepStats))).scalars()}
    assert (stats["hello"].sent, stats["hello"].opened, stats["hello"].clicked) == (2, 1, 0)
    assert (stats["thanks"].sent, stats["nudge"].sent) == (1, 1)
    assert [r.status for r in await runs_of(db, flow)] == [FlowRunStatus.COMPLETED] * 2


async def test_opening_a_campaign_starts_an_engaged_flow_and_a_link_click_another(db: Database) -> None:
    from tests.support.ab import KeepingProvider, make_sender, run_all, seed_audience, start

    lst, ids = await seed_audience(db, 3)
    async with db.transaction() as s:
        from emailkit.domain.sending import campaigns

        campaign = await campaigns.create_campaign(
            s,
            campaigns.CampaignInput(
                name="Launch",
                subject="Launch",
                from_email=FROM_ADDRESS,
                body="<p>x</p>",
                format=ContentFormat.HTML,
                list_ids=[lst],
            ),
        )
    tpl = await make_template(db, "<p>Since you opened it</p>", subject="Follow-up")
    opened_flow = await make_flow(
        db, {"trigger": {"type": "ENGAGED", "campaignId": campaign.id}, "steps": [send("follow", tpl)]}
    )
    clicked_flow = await make_flow(
        db,
        {
            "trigger": {
                "type": "ENGAGED",
                "campaignId": campaign.id,
                "linkUrl": "https://shop.example.com/a",
            },
            "steps": [send("follow", tpl)],
        },
    )
    provider = KeepingProvider()
    await run_all(make_sender(db, provider), await start(db, campaign.id))
    async with db.session() as s:
        deliveries = dict((await s.execute(select(Delivery.subscriber_id, Delivery.id))).all())
    await record_events(
        db,
        [
            IncomingEvent(type=EventType.OPEN, delivery_id=deliveries[ids[0]]),
            IncomingEvent(
                type=EventType.CLICK, delivery_id=deliveries[ids[1]], url="https://shop.example.com/a"
            ),
            IncomingEvent(
                type=EventType.CLICK, delivery_id=deliveries[ids[2]], url="https://shop.example.com/b"
            ),
        ],
    )
    assert sorted(r.subscriber_id for r in await runs_of(db, opened_flow)) == ids
    assert [r.subscriber_id for r in await runs_of(db, clicked_flow)] == [ids[1]]


async def test_erasing_a_person_ends_their_runs_and_keeps_nothing_of_them(db: Database) -> None:
    from emailkit.domain.audience import gdpr

    lst = await insert_list(db, "Events")
    tpl = await make_template(db, "<p>x</p>", subject="x")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "EVENT", "eventName": "signed_up"},
            "steps": [wait("w", 60, "m"), send("m", tpl)],
        },
    )
    [ada] = await people(db, lst, "ada")
    async with db.transaction() as s:
        await events_tracked(
            s, 1, [TrackedEvent(1, ada, "signed_up", {"phone": "+44 20 7946 0000"}, utcnow())]
        )
    world = FlowWorld(db)
    await world.settle()
    async with db.transaction() as s:
        await gdpr.erase_subscriber(s, ada)
    await world.settle(world.later(61))
    assert world.provider.messages == []
    [run] = await runs_of(db, flow)
    assert (run.status, run.exit_reason, run.subscriber_id, run.context) == (
        FlowRunStatus.EXITED,
        "erased",
        None,
        None,
    )
    async with db.session() as s:
        row = await s.get(Flow, flow)
        assert row is not None and (row.active, row.exited) == (0, 1)


async def test_an_import_enters_the_people_it_subscribed_unless_told_not_to(db: Database) -> None:
    from tests.support import import_job

    lst, flow = await welcome(db)
    await people(db, lst, "old")  # subscribed before: the import leaves them alone
    csv = b"email,name\nold@example.com,Old\nnew1@example.com,New One\nnew2@example.com,New Two\n"
    done = await import_job.run(db, await import_job.start(db, csv, list_ids=[lst]))
    assert done.status.value == "FINISHED"
    quiet = await insert_list(db, "Quiet")
    async with db.transaction() as s:
        from emailkit.domain.automation import flows as flow_service

        row = await flow_service.get_flow(s, flow)
        draft = {**row.draft, "trigger": {"type": "SUBSCRIBED", "listId": quiet}}
        await flow_service.update_flow(s, flow, flow_service.FlowInput(definition=draft))
        await flow_service.publish_flow(s, flow)
    csv2 = b"email\nquiet@example.com\n"
    await import_job.run(db, await import_job.start(db, csv2, list_ids=[quiet], trigger_flows=False))
    entered = sorted(r.subscriber_id for r in await runs_of(db, flow) if r.subscriber_id is not None)
    async with db.session() as s:
        emails = dict((await s.execute(select(Subscriber.id, Subscriber.email))).all())
    assert sorted(emails[i] for i in entered) == ["new1@example.com", "new2@example.com", "old@example.com"]
    world = FlowWorld(db)
    await world.settle()
    assert sorted(world.sent_to()) == ["new1@example.com", "new2@example.com", "old@example.com"]


async def test_a_double_opt_in_list_enters_people_when_they_confirm(db: Database) -> None:
    from emailkit.db.tables.audience import OptIn
    from emailkit.domain.audience import optin

    lst = await insert_list(db, "Confirmed only", optin=OptIn.DOUBLE)
    tpl = await make_template(db, "<p>Welcome</p>", subject="Welcome")
    flow = await make_flow(db, {"trigger": {"type": "SUBSCRIBED", "listId": lst}, "steps": [send("hi", tpl)]})
    [ada] = await people(db, lst, "ada")
    assert await runs_of(db, flow) == []  # unconfirmed: not yet
    async with db.transaction() as s:
        assert await optin.confirm(s, ada, [lst]) == 1
    async with db.transaction() as s:
        assert await optin.confirm(s, ada, [lst]) == 0  # a second click confirms nothing more
    assert [r.subscriber_id for r in await runs_of(db, flow)] == [ada]


async def test_deleting_a_person_ends_their_runs(db: Database) -> None:
    lst, flow = await welcome(db)
    [ada] = await people(db, lst, "ada")
    world = FlowWorld(db)
    await world.settle()
    async with db.transaction() as s:
        await subscribers.delete_subscriber(s, ada)
    await world.settle(world.later(11))
    assert world.sent_to() == {"ada@example.com": ["Welcome Ada"]}
    [run] = await runs_of(db, flow)
    assert (run.status, run.exit_reason, run.subscriber_id) == (FlowRunStatus.EXITED, "deleted", None)
