"""Flow steps and rules beyond the basics, on both backends: WEBHOOK (signed, retried, failing for good), a
publish while people are inside (they stay on their version, unless mapped), the frequency cap holding a
flow SEND, and a WAIT until a weekday window on the person's own clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowRun, FlowRunStatus, FlowVersion
from emailkit.db.types import utcnow
from emailkit.domain.audience import subscribers
from emailkit.domain.automation import flows as flow_service
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.definition import Window
from emailkit.domain.automation.waits import next_in_window
from emailkit.domain.automation.webhook_step import flow_webhook_secret
from emailkit.domain.sending.frequency_cap import FrequencyCap, cap_check
from emailkit.providers.webhook_client import GuardedHttpClient
from tests.support.environment import TEST_SECRET
from tests.support.factories import insert_list
from tests.support.flows import FlowWorld, ledger_of, make_flow, make_template, runs_of, send, wait
from tests.support.webhook_receiver import receiver


@pytest.fixture
async def http() -> AsyncIterator[GuardedHttpClient]:
    client = GuardedHttpClient(allow_private=True)
    yield client
    await client.aclose()


async def person(db: Database, list_id: int, name: str, **attributes: object) -> int:
    async with db.transaction() as s:
        row = await subscribers.create_subscriber(
            s, f"{name}@example.com", name.title(), dict(attributes), list_ids=[list_id]
        )
        return row.id


async def test_a_webhook_step_posts_a_signed_run_and_retries_until_it_is_taken(
    db: Database, http: GuardedHttpClient
) -> None:
    answers = iter([503, 503, 204])
    async with receiver(lambda _: (next(answers), b"")) as hooks:
        lst = await insert_list(db, "Shop")
        tpl = await make_template(db, "<p>x</p>", subject="Thanks")
        flow = await make_flow(
            db,
            {
                "trigger": {"type": "EVENT", "eventName": "order.completed"},
                "steps": [
                    {"key": "crm", "type": "WEBHOOK", "url": hooks.url, "next": "thanks"},
                    send("thanks", tpl),
                ],
            },
            allow_private=True,
        )
        ada = await person(db, lst, "ada")
        from emailkit.domain.automation.entry import TrackedEvent, events_tracked

        async with db.transaction() as s:
            await events_tracked(s, 1, [TrackedEvent(7, ada, "order.completed", {"total": 42}, utcnow())])
        world = FlowWorld(db, webhook_poster=http)
        for at in (0, 3600, 7200):  # each retry waits its backoff: the ticker at later instants takes them
            await world.settle(world.later(at))
        requests = await hooks.wait_for(3)
        assert world.sent_to() == {"ada@example.com": ["Thanks"]}
    ids = {r.headers["webhook-id"] for r in requests}
    assert len(ids) == 1  # the same id on every attempt: a receiver can tell a retry
    last = requests[-1]
    payload = Webhook(flow_webhook_secret(TEST_SECRET, flow)).verify(last.body, last.headers)
    assert payload["type"] == "flow.step"
    assert payload["data"]["subscriber"]["email"] == "ada@example.com"
    assert payload["data"]["event"]["properties"] == {"total": 42}
    [run] = await runs_of(db, flow)
    assert await ledger_of(db, run.id) == [("crm", 1, "DONE"), ("thanks", 2, "SENT")]


async def test_a_webhook_refused_for_good_fails_the_step_and_the_run_goes_on(
    db: Database, http: GuardedHttpClient
) -> None:
    async with receiver(lambda _: (410, b"gone")) as hooks:
        lst = await insert_list(db, "Shop")
        tpl = await make_template(db, "<p>x</p>", subject="After")
        flow = await make_flow(
            db,
            {
                "trigger": {"type": "SUBSCRIBED", "listId": lst},
                "steps": [
                    {"key": "crm", "type": "WEBHOOK", "url": hooks.url, "next": "after"},
                    send("after", tpl),
                ],
            },
            allow_private=True,
        )
        await person(db, lst, "ada")
        world = FlowWorld(db, webhook_poster=http)
        await world.settle()
        assert len(hooks.requests) == 1
    [run] = await runs_of(db, flow)
    assert await ledger_of(db, run.id) == [("crm", 1, "FAILED"), ("after", 2, "SENT")]


async def test_a_publish_leaves_people_on_their_version_unless_their_step_is_mapped(db: Database) -> None:
    lst = await insert_list(db, "Course")
    one, two, new = [await make_template(db, f"<p>{n}</p>", subject=n) for n in ("One", "Two", "New")]
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [send("one", one, "w"), wait("w", 60, "two"), send("two", two)],
        },
    )
    stay = await person(db, lst, "stay")
    world = FlowWorld(db)
    await world.settle()
    edited = {
        "trigger": {"type": "SUBSCRIBED", "listId": lst},
        "steps": [send("one", one, "pause"), wait("pause", 60, "fresh"), send("fresh", new)],
    }
    async with db.transaction() as s:
        await flow_service.update_flow(s, flow, flow_service.FlowInput(definition=edited))
        await flow_service.publish_flow(s, flow)  # no mapping: "stay" remains on version 1
    move = await person(db, lst, "move")
    await world.settle()
    async with db.transaction() as s:
        await flow_service.update_flow(s, flow, flow_service.FlowInput(definition=edited))
        published = await flow_service.publish_flow(s, flow, [flow_service.StepMapping("w", "pause")])
        assert published.version == 3
    late = await person(db, lst, "late")
    await world.settle()
    await world.settle(world.later(61))
    got = world.sent_to()
    # "stay" was moved by the second publish's mapping (w → pause: its wait goes on) and so finishes the new
    # way; "move" and "late" entered on the new versions.
    assert got == {
        "stay@example.com": ["One", "New"],
        "move@example.com": ["One", "New"],
        "late@example.com": ["One", "New"],
    }
    async with db.session() as s:
        versions = dict(
            (
                await s.execute(
                    select(FlowRun.subscriber_id, FlowVersion.version).join(
                        FlowVersion, FlowVersion.id == FlowRun.version_id
                    )
                )
            ).all()
        )
    assert versions == {stay: 3, move: 2, late: 3}


async def test_people_inside_stay_on_their_version_without_a_mapping(db: Database) -> None:
    lst = await insert_list(db, "Course")
    one, two, new = [await make_template(db, f"<p>{n}</p>", subject=n) for n in ("One", "Two", "New")]
    definition = {
        "trigger": {"type": "SUBSCRIBED", "listId": lst},
        "steps": [send("one", one, "w"), wait("w", 60, "two"), send("two", two)],
    }
    flow = await make_flow(db, definition)
    await person(db, lst, "early")
    world = FlowWorld(db)
    await world.settle()
    async with db.transaction() as s:
        changed = {**definition, "steps": [send("one", one, "w"), wait("w", 60, "two"), send("two", new)]}
        await flow_service.update_flow(s, flow, flow_service.FlowInput(definition=changed))
        await flow_service.publish_flow(s, flow)
    await person(db, lst, "later")
    await world.settle()
    await world.settle(world.later(61))
    assert world.sent_to() == {"early@example.com": ["One", "Two"], "later@example.com": ["One", "New"]}


async def test_the_frequency_cap_holds_a_flow_send_until_it_is_allowed(db: Database) -> None:
    lst = await insert_list(db, "Drip")
    one, two = [await make_template(db, f"<p>{n}</p>", subject=n) for n in ("One", "Two")]
    await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [send("one", one, "w"), wait("w", 60, "two"), send("two", two)],
        },
    )
    await person(db, lst, "ada")
    world = FlowWorld(db, config=FlowConfig(cap=cap_check(FrequencyCap(1, timedelta(days=1)))))
    await world.settle()
    await world.settle(world.later(61))
    assert world.sent_to() == {"ada@example.com": ["One"]}  # the second waits: one a day
    async with db.session() as s:
        [run] = (await s.execute(select(FlowRun))).scalars().all()
    assert run.status is FlowRunStatus.ACTIVE and run.step_key == "two"
    assert run.due_at is not None and run.due_at > utcnow() + timedelta(hours=23)
    assert (await ledger_of(db, run.id))[-1] == ("two", 3, "PENDING")
    await world.settle(run.due_at + timedelta(seconds=1))
    assert world.sent_to() == {"ada@example.com": ["One", "Two"]}


def test_a_window_wait_ends_at_the_next_weekday_morning_on_the_persons_clock() -> None:
    window = Window((1, 2, 3, 4, 5), time(9, 0), time(17, 0))
    tokyo = ZoneInfo("Asia/Tokyo")
    # Friday 20:00 in Tokyo: the next window opens on Monday at 09:00 there (00:00 UTC).
    friday_evening = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    assert next_in_window(window, tokyo, friday_evening) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    # Inside the window already: at once.
    tuesday_noon = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)
    assert next_in_window(window, tokyo, tuesday_noon) == tuesday_noon


async def test_a_wait_for_a_window_parks_the_run_until_then(db: Database) -> None:
    # The window is on the day after tomorrow on the person's clock, so the run never
    # starts inside it, whenever the suite runs.
    new_york = ZoneInfo("America/New_York")
    weekday = (utcnow().astimezone(new_york) + timedelta(days=2)).isoweekday()
    lst = await insert_list(db, "Office hours")
    tpl = await make_template(db, "<p>x</p>", subject="Hours")
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "SUBSCRIBED", "listId": lst},
            "steps": [
                {
                    "key": "w",
                    "type": "WAIT",
                    "window": {"weekdays": [weekday], "start": "09:00", "end": "10:00"},
                    "next": "m",
                },
                send("m", tpl),
            ],
        },
    )
    await person(db, lst, "ada", timezone="America/New_York")
    world = FlowWorld(db)
    await world.settle()
    [run] = await runs_of(db, flow)
    assert run.due_at is not None
    local = run.due_at.astimezone(new_york)
    assert (local.isoweekday(), local.hour, local.minute) == (weekday, 9, 0)
    assert run.due_at > utcnow() + timedelta(days=1)
    assert world.provider.messages == []
    await world.settle(run.due_at + timedelta(seconds=1))
    assert world.sent_to() == {"ada@example.com": ["Hours"]}


async def test_webhook_endpoints_hear_of_entries_and_completions(db: Database) -> None:
    from emailkit.db.tables.webhooks_out import WebhookMessage
    from emailkit.domain.webhooks_out import emit
    from emailkit.domain.webhooks_out.endpoints import create_endpoint

    emit.subscriptions.invalidate()
    async with db.transaction() as s:
        await create_endpoint(
            s,
            "https://hooks.example.com/in",
            ["flow.entered", "flow.completed"],
            "crm",
            instance_secret=TEST_SECRET,
            allow_private=False,
        )
    lst = await insert_list(db, "Welcome")
    tpl = await make_template(db, "<p>x</p>", subject="Hi")
    await make_flow(db, {"trigger": {"type": "SUBSCRIBED", "listId": lst}, "steps": [send("hi", tpl)]})
    await person(db, lst, "ada")
    await FlowWorld(db).settle()
    async with db.session() as s:
        bodies = [
            json.loads(m.payload)
            for m in (await s.execute(select(WebhookMessage).order_by(WebhookMessage.id))).scalars()
        ]
    assert [b["type"] for b in bodies] == ["flow.entered", "flow.completed"]
    assert bodies[0]["data"]["runId"] == bodies[1]["data"]["runId"]
    emit.subscriptions.invalidate()
