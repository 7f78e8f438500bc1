"""Custom events start EVENT flows, through both ways in: trackEvent and POST /api/events; an idempotent retry
starts nothing twice, and the template sees the event's properties."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowRun
from emailkit.domain.audience import subscribers
from tests.support.factories import insert_list
from tests.support.flows import FlowWorld, make_flow, make_template, send
from tests.support.graphql import GQL, data

TRACK = """mutation($i: TrackEventInput!) { trackEvent(input: $i) { duplicate userErrors { code } } }"""


async def test_events_start_their_flows_once_per_event(
    gql: GQL, client: httpx.AsyncClient, admin_key: str, db: Database
) -> None:
    lst = await insert_list(db, "Customers")
    async with db.transaction() as s:
        await subscribers.create_subscriber(s, "ada@example.com", "Ada", list_ids=[lst])
    tpl = await make_template(
        db, "<p>{{ event.properties.item }}</p>", subject="Thanks for the {{ event.properties.item }}"
    )
    flow = await make_flow(
        db,
        {
            "trigger": {"type": "EVENT", "eventName": "order.completed"},
            "steps": [send("thanks", tpl)],
            "reentry": "ALWAYS",
        },
    )
    item = {
        "email": "ada@example.com",
        "name": "order.completed",
        "properties": {"item": "lamp"},
        "idempotencyKey": "o-1",
    }
    for _ in range(2):  # the retry is a duplicate: no second event, no second run
        out = data(await gql(TRACK, {"i": item}))["trackEvent"]
        assert out["userErrors"] == []
    resp = await client.post(
        "/api/events",
        json={
            "events": [
                {"email": "ada@example.com", "name": "order.completed", "properties": {"item": "desk"}}
            ]
        },
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert resp.status_code == 200, resp.text
    async with db.session() as s:
        runs = (await s.execute(select(FlowRun).where(FlowRun.flow_id == flow))).scalars().all()
    assert sorted(r.context["event"]["properties"]["item"] for r in runs if r.context) == ["desk", "lamp"]
    world = FlowWorld(db)
    await world.settle()
    assert sorted(world.sent_to()["ada@example.com"]) == ["Thanks for the desk", "Thanks for the lamp"]
