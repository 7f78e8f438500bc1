"""Campaign stats, links and timeline, the event log, and live `campaignStats` over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.feedback import IncomingEvent, record_events
from emailkit.domain.ports.queue import PubSub
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.feedback import T0, add_workspace, ev, seed_sent_campaign
from tests.support.graphql import GQL, data
from tests.support.live_server import live_server

STATS_FIELDS = (
    "recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed "
    "openRate clickRate bounceRate complaintRate"
)
CAMPAIGN = f"""
query($id: ID!) {{
  campaign(id: $id) {{
    stats {{ {STATS_FIELDS} }}
    links {{ url clicks uniqueClicks }}
    hourly: timeline {{ start delivered bounced complained opens clicks unsubscribed dropped deferred }}
    daily: timeline(bucket: DAY) {{ start delivered opens clicks }}
  }}
}}
"""
EVENTS = """
query($first: Int!, $after: String, $filter: EventFilter) {
  events(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id type bounceType email provider occurredAt url metadata
                         campaign { id } subscriber { email } } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}
"""
HOME, SHOP = "https://example.org/", "https://example.org/shop"


async def engaged_campaign(db: Database) -> Any:
    """4 recipients: all delivered, a and b opened, a clicked twice, c bounced hard, d complained."""
    seeded = await seed_sent_campaign(db, ["a@x.test", "b@x.test", "c@x.test", "d@x.test"])
    d = seeded.deliveries
    await record_events(
        db,
        [
            *(ev(EventType.DELIVERED, e, delivery=d[e], at=T0) for e in ("a@x.test", "b@x.test", "d@x.test")),
            ev(
                EventType.BOUNCE,
                "c@x.test",
                delivery=d["c@x.test"],
                bounce=BounceType.HARD,
                at=T0,
                custom={"newsletter": "spring"},
            ),
            ev(EventType.OPEN, "a@x.test", delivery=d["a@x.test"], at=T0 + timedelta(hours=1), event_id="o1"),
            ev(EventType.OPEN, "a@x.test", delivery=d["a@x.test"], at=T0 + timedelta(hours=1), event_id="o2"),
            ev(EventType.OPEN, "b@x.test", delivery=d["b@x.test"], at=T0 + timedelta(days=1)),
            ev(EventType.COMPLAINT, "d@x.test", delivery=d["d@x.test"], at=T0 + timedelta(days=1)),
        ],
    )
    await record_events(
        db,
        [
            IncomingEvent(
                EventType.CLICK, delivery_id=d["a@x.test"], url=HOME, occurred_at=T0 + timedelta(hours=1)
            ),
            IncomingEvent(
                EventType.CLICK, delivery_id=d["a@x.test"], url=SHOP, occurred_at=T0 + timedelta(hours=2)
            ),
        ],
    )
    return seeded


async def test_stats_links_and_timeline(gql: GQL, db: Database) -> None:
    seeded = await engaged_campaign(db)
    campaign = data(await gql(CAMPAIGN, {"id": to_global_id("Campaign", seeded.campaign_id)}))["campaign"]
    assert campaign["stats"] == {
        "recipients": 4,
        "sent": 4,
        "delivered": 3,
        "bounced": 1,
        "complained": 1,
        "opens": 3,
        "uniqueOpens": 2,
        "clicks": 2,
        "uniqueClicks": 1,
        "unsubscribed": 0,
        "openRate": round(2 / 3, 6),
        "clickRate": round(1 / 3, 6),
        "bounceRate": 0.25,
        "complaintRate": round(1 / 3, 6),
    }
    assert sorted(campaign["links"], key=lambda link: link["url"]) == [
        {"url": HOME, "clicks": 1, "uniqueClicks": 1},
        {"url": SHOP, "clicks": 1, "uniqueClicks": 1},
    ]
    zero = {
        "bounced": 0,
        "complained": 0,
        "opens": 0,
        "clicks": 0,
        "unsubscribed": 0,
        "dropped": 0,
        "deferred": 0,
    }
    hour = T0.replace(minute=0)
    assert campaign["hourly"] == [
        {**zero, "start": hour.isoformat(), "delivered": 3, "bounced": 1},
        {**zero, "start": (hour + timedelta(hours=1)).isoformat(), "delivered": 0, "opens": 2, "clicks": 1},
        {**zero, "start": (hour + timedelta(hours=2)).isoformat(), "delivered": 0, "clicks": 1},
        {
            **zero,
            "start": (hour + timedelta(days=1)).isoformat(),
            "delivered": 0,
            "opens": 1,
            "complained": 1,
        },
    ]
    day = T0.replace(hour=0, minute=0)
    assert campaign["daily"] == [
        {"start": day.isoformat(), "delivered": 3, "opens": 2, "clicks": 2},
        {"start": (day + timedelta(days=1)).isoformat(), "delivered": 0, "opens": 1, "clicks": 0},
    ]


async def test_a_campaign_without_events_has_zero_stats(gql: GQL, db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"], sent_count=0)
    out = data(await gql(CAMPAIGN, {"id": to_global_id("Campaign", seeded.campaign_id)}))["campaign"]
    assert out["stats"]["recipients"] == 1
    assert out["stats"]["openRate"] == 0.0 and out["stats"]["bounceRate"] == 0.0
    assert out["links"] == [] and out["hourly"] == []


async def test_stats_of_many_campaigns_in_one_query(gql: GQL, db: Database) -> None:
    first = await engaged_campaign(db)
    second = await seed_sent_campaign(db, ["z@x.test"])
    await record_events(db, [ev(EventType.DELIVERED, "z@x.test", delivery=second.deliveries["z@x.test"])])
    out = data(await gql("{ campaigns(first: 10) { edges { node { id stats { delivered } } } } }"))
    by_id = {e["node"]["id"]: e["node"]["stats"]["delivered"] for e in out["campaigns"]["edges"]}
    assert by_id == {
        to_global_id("Campaign", first.campaign_id): 3,
        to_global_id("Campaign", second.campaign_id): 1,
    }


async def test_events_filter_and_pages(gql: GQL, db: Database) -> None:
    seeded = await engaged_campaign(db)
    await record_events(db, [ev(EventType.DELIVERED, "outsider@x.test", provider="mailgun")])
    everything = data(await gql(EVENTS, {"first": 50}))["events"]
    assert everything["totalCount"] == 11
    ids = [e["node"]["id"] for e in everything["edges"]]
    # Newest first, cursors continue where the page ended.
    page1 = data(await gql(EVENTS, {"first": 4}))["events"]
    page2 = data(await gql(EVENTS, {"first": 4, "after": page1["pageInfo"]["endCursor"]}))["events"]
    assert [e["node"]["id"] for e in page1["edges"] + page2["edges"]] == ids[:8]
    assert page1["edges"][0]["node"]["email"] == "outsider@x.test"

    def run(f: dict[str, Any]) -> Any:
        return gql(EVENTS, {"first": 50, "filter": f})

    opens = data(await run({"type": "OPEN"}))["events"]
    assert {e["node"]["email"] for e in opens["edges"]} == {"a@x.test", "b@x.test"} and opens[
        "totalCount"
    ] == 3
    bounce = data(await run({"type": "BOUNCE", "email": "C@X.test"}))["events"]["edges"][0]["node"]
    assert bounce["bounceType"] == "HARD"
    assert bounce["campaign"] == {"id": to_global_id("Campaign", seeded.campaign_id)}
    assert bounce["subscriber"] == {"email": "c@x.test"}
    # The sender's own data; our correlation keys are columns (campaign, subscriber), not repeated here.
    assert bounce["metadata"] == {"newsletter": "spring"}
    assert {e["node"]["metadata"] for e in opens["edges"]} == {None}
    ours = data(await run({"provider": "emailkit"}))["events"]
    assert [e["node"]["url"] for e in ours["edges"]] == [SHOP, HOME]
    in_campaign = data(await run({"campaignId": to_global_id("Campaign", seeded.campaign_id)}))["events"]
    assert in_campaign["totalCount"] == 10
    mailgun = data(await run({"provider": "mailgun"}))["events"]["edges"]
    assert [(e["node"]["email"], e["node"]["campaign"]) for e in mailgun] == [("outsider@x.test", None)]
    bad = await run({"campaignId": to_global_id("Subscriber", 1)})
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_ID"

    node = data(await gql("query($id: ID!) { node(id: $id) { id ... on Event { type } } }", {"id": ids[-1]}))
    assert node["node"]["type"] in {"DELIVERED", "BOUNCE"}


async def test_a_workspace_reads_only_its_own_feedback(gql: GQL, db: Database) -> None:
    first = await engaged_campaign(db)
    w2 = await add_workspace(db, "second")
    with workspace_scope(w2):
        second = await seed_sent_campaign(db, ["a@x.test"])
        key2 = await make_key(db, Role.ADMIN, "second")
    d = second.deliveries["a@x.test"]
    await record_events(db, [ev(EventType.OPEN, "a@x.test", delivery=d, event_id="w2-open")])
    second_id = to_global_id("Campaign", second.campaign_id)

    theirs = data(await gql(EVENTS, {"first": 50}, key=key2))["events"]
    assert theirs["totalCount"] == 1
    (node,) = (e["node"] for e in theirs["edges"])
    assert node["campaign"] == {"id": second_id} and node["subscriber"] == {"email": "a@x.test"}
    stats = data(await gql(CAMPAIGN, {"id": second_id}, key=key2))["campaign"]["stats"]
    assert (stats["opens"], stats["uniqueOpens"]) == (1, 1)

    mine = data(await gql(EVENTS, {"first": 50}))["events"]
    assert mine["totalCount"] == 10
    assert {e["node"]["campaign"]["id"] for e in mine["edges"]} == {
        to_global_id("Campaign", first.campaign_id)
    }
    filtered = data(await gql(EVENTS, {"first": 50, "filter": {"campaignId": second_id}}))["events"]
    assert filtered["totalCount"] == 0
    # Another workspace's campaign and event answer exactly like ids that do not exist.
    missing = to_global_id("Campaign", 999_999)
    assert await gql(CAMPAIGN, {"id": second_id}) == await gql(CAMPAIGN, {"id": missing})
    node_query = "query($id: ID!) { node(id: $id) { id } }"
    assert await gql(node_query, {"id": node["id"]}) == await gql(
        node_query, {"id": to_global_id("Event", 999_999)}
    )


async def test_subscriber_events(gql: GQL, db: Database) -> None:
    seeded = await engaged_campaign(db)
    query = """
    query($id: ID!) {
      subscriber(id: $id) { events(first: 2) { edges { node { type url } } totalCount pageInfo { hasNextPage } } }
    }
    """
    subscriber_id = to_global_id("Subscriber", seeded.subscribers["a@x.test"])
    out = data(await gql(query, {"id": subscriber_id}))["subscriber"]["events"]
    assert out["totalCount"] == 5
    assert out["pageInfo"]["hasNextPage"] is True
    assert [e["node"] for e in out["edges"]] == [
        {"type": "CLICK", "url": SHOP},
        {"type": "CLICK", "url": HOME},
    ]


# --- live stats over a real WebSocket ----------------------------------------------------------------------


@pytest.fixture
async def server(db: Database, live_pubsub: PubSub) -> AsyncIterator[str]:
    """The whole app behind uvicorn on a loopback port (real HTTP and WebSocket)."""
    settings = Settings(  # type: ignore[arg-type]
        database_url=db.url, secret_key=TEST_SECRET, public_url="http://127.0.0.1", webhook_verify=False
    )
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url, pubsub=live_pubsub)
    async with live_server(create_app(settings, runtime)) as address:
        yield address


async def next_stats(ws: ClientConnection, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Stats messages up to the first one satisfying `until` (updates are coalesced, so there may be fewer
    than the batches posted)."""
    seen = []
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            stats = message["payload"]["data"]["campaignStats"]
            seen.append(stats)
            if until(stats):
                return seen


def sendgrid(events: list[tuple[str, str, int]]) -> bytes:
    return json.dumps(
        [
            {
                "email": email,
                "event": kind,
                "timestamp": 1700000000 + i,
                "sg_event_id": f"live-{kind}-{email}-{i}",
                "emailkit_delivery": str(delivery),
            }
            for i, (kind, email, delivery) in enumerate(events)
        ]
    ).encode()


async def test_campaign_stats_stream_while_webhooks_arrive(server: str, db: Database, admin_key: str) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test", "b@x.test"])
    d = seeded.deliveries
    subscription = f'subscription {{ campaignStats(id: "{to_global_id("Campaign", seeded.campaign_id)}") {{ {STATS_FIELDS} }} }}'
    async with (
        connect(f"ws://{server}/graphql", subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
        httpx.AsyncClient(base_url=f"http://{server}") as http,
    ):
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {admin_key}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": subscription}}))
        (current,) = await next_stats(ws, lambda s: True)
        assert (current["recipients"], current["sent"], current["delivered"]) == (2, 2, 0)

        resp = await http.post(
            "/webhooks/sendgrid",
            content=sendgrid(
                [("delivered", "a@x.test", d["a@x.test"]), ("delivered", "b@x.test", d["b@x.test"])]
            ),
        )
        assert resp.status_code == 200
        updates = await next_stats(ws, lambda s: s["delivered"] == 2)
        assert [u["delivered"] for u in updates] == [2]

        for i in range(3):
            await http.post(
                "/webhooks/sendgrid", content=sendgrid([("open", "a@x.test", d["a@x.test"])] * (i + 1))
            )
        await http.post("/webhooks/sendgrid", content=sendgrid([("spamreport", "b@x.test", d["b@x.test"])]))
        updates = await next_stats(ws, lambda s: s["complained"] == 1 and s["opens"] == 3)
        final = updates[-1]
        assert (final["uniqueOpens"], final["openRate"], final["complaintRate"]) == (1, 0.5, 0.5)
        # Never backwards, whatever the order in which concurrent batches were published.
        assert [u["opens"] for u in updates] == sorted(u["opens"] for u in updates)

        await ws.send(json.dumps({"id": "1", "type": "complete"}))


async def test_campaign_stats_of_an_unknown_campaign(server: str, admin_key: str) -> None:
    async with connect(f"ws://{server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {admin_key}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = f'subscription {{ campaignStats(id: "{to_global_id("Campaign", 424242)}") {{ sent }} }}'
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        message = json.loads(await ws.recv())
    assert message["type"] == "next"
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
