"""An open GraphQL WebSocket connection loses its access when its API key is revoked."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import ApiKey, Role
from emailkit.domain import apikeys
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.pubsub import InProcessPubSub
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.feedback import seed_sent_campaign
from tests.support.live_server import live_server

SUBSCRIBE = 'subscription {{ campaignStats(id: "{id}") {{ sent }} }}'


async def _revoke(db: Database, name: str) -> None:
    async with db.transaction() as s:
        key_id = (await s.execute(select(ApiKey.id).where(ApiKey.name == name))).scalar_one()
        await apikeys.revoke_api_key(s, key_id)


@pytest.mark.parametrize("revoke", [True, False], ids=["revoked", "kept"])
async def test_a_revoked_key_closes_its_open_subscription(db: Database, revoke: bool) -> None:
    seeded = await seed_sent_campaign(db, ["a@x.test"])
    name = f"live-{revoke}"
    key = await make_key(db, Role.VIEWER, name)
    settings = Settings(  # type: ignore[arg-type]
        database_url=db.url,
        secret_key=TEST_SECRET,
        public_url="http://127.0.0.1",
        ws_key_recheck_seconds=0.05,
    )
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url, pubsub=InProcessPubSub())
    query = SUBSCRIBE.format(id=to_global_id("Campaign", seeded.campaign_id))
    async with (
        live_server(create_app(settings, runtime)) as address,
        connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
    ):
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        first = json.loads(await ws.recv())
        assert first["type"] == "next" and first["payload"]["data"]["campaignStats"]["sent"] == 1
        if not revoke:
            # Still open after many re-checks: nothing arrives, and the connection answers a ping.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await ws.recv()
            await ws.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(10):
                assert json.loads(await ws.recv())["type"] == "pong"
            return
        await _revoke(db, name)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
