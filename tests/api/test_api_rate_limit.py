"""The per-API-key rate limit (EMAILKIT_API_RATE_LIMIT): 429 with Retry-After over HTTP, a RATE_LIMITED
error over WebSocket, one budget per key, shared through Redis by every API process when one is configured.

Runs on the in-memory store always, and on Redis too when EMAILKIT_TEST_REDIS_URL is set (as the database
suites add PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings, SettingsError, load_settings
from emailkit.tasks.pubsub import InProcessPubSub
from emailkit.web.ratelimit import ApiRateLimiter
from tests.support.environment import REDIS_URL, TEST_SECRET
from tests.support.factories import make_key
from tests.support.feedback import seed_sent_campaign
from tests.support.live_server import live_server

STORES = ["memory"] + (["redis"] if REDIS_URL else [])
VIEWER = "{ viewer { name } }"

MakeApp = Callable[..., Starlette]


async def _forget_counts() -> None:
    """Key ids restart with every test's fresh tables: counts a previous test left in Redis must go."""
    assert REDIS_URL is not None
    client = redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match="LIMITS:LIMITER/emailkit-api/*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=STORES)
async def make_app(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[MakeApp]:
    if request.param == "redis":
        await _forget_counts()

    def make(limit: str, runtime: Runtime | None = None) -> Starlette:
        settings = Settings(  # type: ignore[arg-type]
            database_url=db.url,
            secret_key=TEST_SECRET,
            public_url="http://127.0.0.1",
            api_rate_limit=limit,
            redis_url=REDIS_URL if request.param == "redis" else None,
        )
        runtime = runtime or Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url)
        return create_app(settings, runtime)

    yield make


def http(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def query(client: httpx.AsyncClient, key: str, text: str = VIEWER) -> httpx.Response:
    return await client.post("/graphql", json={"query": text}, headers={"Authorization": f"Bearer {key}"})


async def test_over_the_limit_is_429_with_retry_after_and_other_keys_go_on(
    make_app: MakeApp, db: Database
) -> None:
    busy = await make_key(db, Role.VIEWER, "busy")
    calm = await make_key(db, Role.VIEWER, "calm")
    async with http(make_app("3/minute")) as client:
        for _ in range(3):
            resp = await query(client, busy)
            assert resp.status_code == 200 and resp.json()["data"] == {"viewer": {"name": "busy"}}
        refused = await query(client, busy)
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        # The oldest of the three leaves the minute's window within the minute (they were just made).
        assert 50 <= retry_after <= 60, retry_after
        (error,) = refused.json()["errors"]
        assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry_after}
        assert "retry in" in error["message"]

        # Another key is not limited by this one's exhaustion.
        assert (await query(client, calm)).status_code == 200
        # The export route counts against the same key's budget.
        export = await client.get("/export/subscribers.csv", headers={"Authorization": f"Bearer {busy}"})
        assert export.status_code == 429
        assert export.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(export.headers["retry-after"]) <= 60
        calm_export = await client.get("/export/subscribers.csv", headers={"Authorization": f"Bearer {calm}"})
        assert calm_export.status_code == 200


async def test_retry_after_is_when_the_key_gets_through_again(make_app: MakeApp, db: Database) -> None:
    key = await make_key(db, Role.VIEWER, "k")
    async with http(make_app("2/second")) as client:
        assert [(await query(client, key)).status_code for _ in range(2)] == [200, 200]
        refused = await query(client, key)
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert retry_after == 1
        # Refused requests do not count: polling finds the request that passes, within Retry-After.
        started = time.monotonic()
        while (await query(client, key)).status_code == 429:
            assert time.monotonic() - started <= retry_after + 0.5
            await asyncio.sleep(0.05)


async def test_unauthenticated_requests_are_not_counted_against_anyone(
    make_app: MakeApp, db: Database
) -> None:
    key = await make_key(db, Role.VIEWER, "k")
    async with http(make_app("2/minute")) as client:
        for _ in range(5):
            assert (await query(client, "ek_not-a-key")).status_code == 401
        assert [(await query(client, key)).status_code for _ in range(3)] == [200, 200, 429]


async def _ws_send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def _ws_recv(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _init(ws: Any, key: str) -> None:
    await _ws_send(ws, {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    assert (await _ws_recv(ws))["type"] == "connection_ack"


async def test_over_websocket_each_operation_counts_and_the_excess_is_a_rate_limited_error(
    make_app: MakeApp, db: Database
) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    busy = await make_key(db, Role.VIEWER, "busy")
    calm = await make_key(db, Role.VIEWER, "calm")
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://127.0.0.1", pubsub=InProcessPubSub())
    app = make_app("2/minute", runtime)
    campaign = to_global_id("Campaign", seeded.campaign_id)
    stats = f'subscription {{ campaignStats(id: "{campaign}") {{ sent }} }}'
    async with (
        live_server(app) as address,
        connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
    ):
        await _init(ws, busy)
        # A subscription and a query: two operations, the whole budget.
        await _ws_send(ws, {"id": "s1", "type": "subscribe", "payload": {"query": stats}})
        first = await _ws_recv(ws)
        assert (first["id"], first["type"], first["payload"]["data"]) == (
            "s1",
            "next",
            {"campaignStats": {"sent": 1}},
        )
        await _ws_send(ws, {"id": "q1", "type": "subscribe", "payload": {"query": VIEWER}})
        answer = await _ws_recv(ws)
        assert (answer["id"], answer["type"], answer["payload"]["data"]) == (
            "q1",
            "next",
            {"viewer": {"name": "busy"}},
        )
        assert await _ws_recv(ws) == {"id": "q1", "type": "complete"}

        for op_id, text in (("q2", VIEWER), ("s2", stats)):
            await _ws_send(ws, {"id": op_id, "type": "subscribe", "payload": {"query": text}})
            refused = await _ws_recv(ws)
            assert (refused["id"], refused["type"]) == (op_id, "error")
            (error,) = refused["payload"]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert 1 <= error["extensions"]["retryAfter"] <= 60

        # The connection and its running subscription stay up.
        await _ws_send(ws, {"type": "ping"})
        assert (await _ws_recv(ws))["type"] == "pong"

        # Another key's connection is not limited; the same key over HTTP is (one budget per key).
        async with connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as other:  # type: ignore[list-item]
            await _init(other, calm)
            await _ws_send(other, {"id": "q", "type": "subscribe", "payload": {"query": VIEWER}})
            assert (await _ws_recv(other))["type"] == "next"
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            assert (await query(client, busy)).status_code == 429
            assert (await query(client, calm)).status_code == 200


async def test_an_unreachable_store_lets_requests_through(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis being away must not take the API down with it: the limit is protection, not correctness."""
    key = await make_key(db, Role.VIEWER, "k")
    settings = Settings(  # type: ignore[arg-type]
        database_url=db.url,
        secret_key=TEST_SECRET,
        api_rate_limit="1/minute",
        # Nothing listens on port 1.
        redis_url="redis://127.0.0.1:1/0",
    )
    app = create_app(settings, Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver"))
    async with http(app) as client:
        assert [(await query(client, key)).status_code for _ in range(3)] == [200, 200, 200]
    warnings = [r for r in caplog.records if "rate limit storage unreachable" in r.getMessage()]
    # Said once, not once per request.
    assert len(warnings) == 1


def test_the_setting_is_checked_and_empty_turns_the_limit_off() -> None:
    with pytest.raises(SettingsError, match="EMAILKIT_API_RATE_LIMIT: must be a rate"):
        load_settings(api_rate_limit="lots")
    assert ApiRateLimiter.from_settings(load_settings(api_rate_limit="")) is None
    limiter = ApiRateLimiter.from_settings(load_settings(api_rate_limit="20/second;600/minute"))
    assert limiter is not None and [str(item) for item in limiter.limits] == [
        "20 per 1 second",
        "600 per 1 minute",
    ]
    assert load_settings().api_rate_limit == "600/minute"
