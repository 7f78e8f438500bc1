"""Outages of the services emailkit leans on, caused for real, and what clients see meanwhile.

* Redis restarted while the API serves GraphQL subscriptions: every open subscription ends with a
  SERVICE_UNAVAILABLE error (the message lost in the gap may have been the last one, so waiting on would
  hang), a subscription attempted while Redis is down fails the same way at once, and once Redis is back
  new subscriptions get live messages again, from the same API process.
* PostgreSQL restarted in the middle of a campaign (a throw-away cluster this test starts; never the
  machine's shared server): /readyz goes red, then green; the API and the workers recover without a
  restart, and the campaign finishes with every address received exactly once.

Collected when EMAILKIT_TEST_REDIS_URL (and, for the PostgreSQL restart, EMAILKIT_TEST_DATABASE_URL) is
set, as in CI; each test runs its own servers so it can kill them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.sending import CampaignStatus
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.progress import progress_channel
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.pubsub import RedisPubSub
from tests.integration.test_crash_safety import (
    CHUNK_SIZE,
    PUBLIC_URL,
    SMTP_POOL_SIZE,
    WORKER_THREADS,
    Stack,
    assert_everyone_exactly_once,
    open_stack,
    ready,
    wait_for_status,
)
from tests.support.audience import seed_campaign
from tests.support.database import prepare_app_role
from tests.support.environment import APP_ROLE, PG_URL, REDIS_URL, TEST_SECRET, as_role, pg_async_url
from tests.support.factories import make_key
from tests.support.feedback import seed_sent_campaign
from tests.support.live_server import live_server
from tests.support.pg_cluster import ThrowawayCluster, running_cluster
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink

PROGRESS = 'subscription {{ campaignProgress(id: "{id}") {{ status sent }} }}'

# -- Redis restart under live subscriptions --------------------------------------------------------------


async def _open(address: str, key: str) -> ClientConnection:
    ws = await connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def _next_message(ws: ClientConnection, op: str, within: float = 30) -> dict[str, Any]:
    """The next message of operation `op` (a hang here is the failure this module is about)."""
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message.get("id") == op:
                return message


def _error_codes(message: dict[str, Any]) -> list[str]:
    errors = message["payload"] if message["type"] == "error" else message["payload"].get("errors", [])
    return [e.get("extensions", {}).get("code") for e in errors]


async def _ends_unavailable(ws: ClientConnection, op: str) -> None:
    message = await _next_message(ws, op)
    assert message["type"] in ("error", "next"), message
    assert _error_codes(message) == ["SERVICE_UNAVAILABLE"], message
    assert "Unexpected error" not in json.dumps(message)


async def _redis_restart_under_live_subscriptions(db: Database, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    api_pubsub = RedisPubSub(server.url, prefix=prefix)
    seeded = await seed_sent_campaign(db, ["a@x.test"], status=CampaignStatus.RUNNING, sent_count=0)
    key = await make_key(db, Role.VIEWER, "live")
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=PUBLIC_URL)  # type: ignore[arg-type]
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=PUBLIC_URL, pubsub=api_pubsub)
    query = PROGRESS.format(id=to_global_id("Campaign", seeded.campaign_id))
    subscribe = {"type": "subscribe", "payload": {"query": query}}
    try:
        async with live_server(create_app(settings, runtime)) as address:
            ws = await _open(address, key)
            await ws.send(json.dumps({"id": "1", **subscribe}))
            first = await _next_message(ws, "1")
            assert (
                first["type"] == "next"
                and first["payload"]["data"]["campaignProgress"]["status"] == "RUNNING"
            )

            server.kill()
            await _ends_unavailable(ws, "1")
            # While Redis is down a new subscription is refused at once, with the same code.
            await ws.send(json.dumps({"id": "2", **subscribe}))
            await _ends_unavailable(ws, "2")
            # The connection itself stays usable.
            await ws.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(10):
                while json.loads(await ws.recv())["type"] != "pong":
                    pass  # the two operations' "complete" may come first

            server.start()
            # Back (empty, same port): the same API process subscribes again and live messages flow. The
            # reader may not have reconnected at the first try: that try is refused honestly, and the client
            # tries again under a new operation id.
            deadline = time.monotonic() + 30
            for attempt in range(1000):
                op = f"3.{attempt}"
                await ws.send(json.dumps({"id": op, **subscribe}))
                message = await _next_message(ws, op)
                if message["type"] == "next" and "errors" not in message["payload"]:
                    break
                assert _error_codes(message) == ["SERVICE_UNAVAILABLE"], message
                assert time.monotonic() < deadline, "no subscription possible 30 s after Redis came back"
                await asyncio.sleep(0.2)
            publisher = RedisPubSub(server.url, prefix=prefix)
            try:
                update = {"status": "FINISHED", "recipients": 1, "sent": 1, "failed": 0, "skipped": 0}
                await publisher.publish(progress_channel(seeded.campaign_id), update)
            finally:
                await publisher.close()
            message = await _next_message(ws, op)
            assert message["payload"]["data"]["campaignProgress"] == {"status": "FINISHED", "sent": 1}
            assert (await _next_message(ws, op))["type"] == "complete"
            await ws.close()
    finally:
        await api_pubsub.close()
        server.kill()


# -- PostgreSQL restart mid-campaign --------------------------------------------------------------------


class ClusterStack(Stack):
    """The crash-test stack on a private PostgreSQL cluster (workers connect to it, not to the shared one)."""

    database_url = ""

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "EMAILKIT_DATABASE_URL": self.database_url}


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    async with running_cluster() as made:
        yield made


def _up(cluster: ThrowawayCluster) -> bool:
    return (
        subprocess.run(
            [str(cluster.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(cluster.port)],
            check=False,
        ).returncode
        == 0
    )


async def _readyz(api: httpx.AsyncClient) -> int:
    return (await api.get("/readyz")).status_code


async def _wait_readyz(api: httpx.AsyncClient, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (code := await _readyz(api)) != status:
        assert time.monotonic() < deadline, f"/readyz still {code}, not {status}, after {within}s"
        await asyncio.sleep(0.2)


async def _postgresql_restart_mid_campaign(cluster: ThrowawayCluster, tmp_path: Path) -> None:
    # As in production: the application's role, held to row-level security (the superuser only sets it up).
    admin_url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    await prepare_app_role(admin_url)
    url = as_role(admin_url, APP_ROLE)
    db = Database(pg_async_url(url), pool_size=5)
    await migrate.upgrade(db)
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    sink = CountingSink()
    sink.start()
    async with open_stack(ClusterStack, db, redis_server, sink, tmp_path) as stack:
        stack.database_url = url
        try:
            booting = stack.spawn_workers(2)
            campaign_id, emails = await seed_campaign(db, 10_000)
            workers = await ready(booting)
            assert await _readyz(stack.api) == 200
            await stack.start_campaign(campaign_id)
            await sink.wait_until(lambda s: s.accepted_total >= 2000, within=60, what="2000 accepted")

            marks = [len(w.lines) for w in workers]
            await asyncio.to_thread(cluster.stop, "fast")
            assert not _up(cluster)
            await _wait_readyz(stack.api, 503, within=30)
            # The workers notice (their database calls fail) before the server comes back.
            deadline = time.monotonic() + 60
            while not all(
                any("connection" in line.lower() for line in w.lines[mark:])
                for w, mark in zip(workers, marks)
            ):
                assert time.monotonic() < deadline, "\n".join(w.log(20) for w in workers)
                await asyncio.sleep(0.2)
            await asyncio.to_thread(cluster.start)
            await _wait_readyz(stack.api, 200, within=60)

            row = await wait_for_status(db, campaign_id, CampaignStatus.FINISHED, 180, workers)
            assert row.status_reason is None
            # Chunks committed as SENDING whose outcome could not be written while the server was down are
            # in doubt (results then wait for the end of their chunk); of those, at most one message per SMTP
            # connection of each worker never arrived.
            await assert_everyone_exactly_once(
                stack,
                campaign_id,
                emails,
                missing_bound=2 * SMTP_POOL_SIZE,
                in_doubt_bound=2 * WORKER_THREADS * CHUNK_SIZE,
            )
            # Nobody was restarted: the same API process answers, the same workers are alive.
            assert all(w.alive() for w in workers)
            out = await stack.gql("{ campaigns(first: 1) { totalCount } }")
            assert out["campaigns"]["totalCount"] == 1
        finally:
            sink.stop()
            redis_server.kill()
            await db.dispose()


if REDIS_URL:
    # Collected only when Redis tests are wanted (never skipped).
    test_redis_restart_under_live_subscriptions = _redis_restart_under_live_subscriptions
if REDIS_URL and PG_URL:
    test_postgresql_restart_mid_campaign = pytest.mark.crash(_postgresql_restart_mid_campaign)
