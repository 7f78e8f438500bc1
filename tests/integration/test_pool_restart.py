"""Pooled connections outlive a PostgreSQL restart without SQLAlchemy's pre-ping: a connection the server
closed while it sat in the pool is replaced at checkout, so the first requests after the restart are answered
rather than failed (a throw-away cluster, which the test stops and starts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.graphql import data
from tests.support.pg_cluster import ThrowawayCluster, running_cluster

pytestmark = pytest.mark.postgresql_only

POOL = 3
QUERY = {"query": "{ lists { totalCount } }"}


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    async with running_cluster() as made:
        yield made


async def fill_pool(db: Database) -> set[int]:
    """Use every pooled connection at once, so each of them is connected; their backends' pids."""

    async def one() -> int:
        async with db.session() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await asyncio.sleep(0.05)  # overlap, so the pool opens POOL connections rather than reusing one
            return int(pid)

    return set(await asyncio.gather(*(one() for _ in range(POOL))))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_every_request_after_a_restart_is_answered(cluster: ThrowawayCluster, mode: str) -> None:
    db = Database(cluster.url, pool_size=POOL)
    try:
        await migrate.upgrade(db)
        key = await make_key(db)
        settings = Settings(database_url=cluster.url, secret_key=TEST_SECRET)  # type: ignore[arg-type]
        app = create_app(settings, Runtime(db=db, secret_key=TEST_SECRET, public_url="http://x"))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            before = await fill_pool(db)
            assert len(before) == POOL
            assert data((await client.post("/graphql", json=QUERY, headers=headers)).json())

            async with db.session() as session:
                # The cluster runs with synchronous_commit=off: what was just committed is made durable
                # before an immediate stop (a crash, to the server) can lose it.
                await session.execute(text("CHECKPOINT"))
            await asyncio.to_thread(cluster.stop, mode)
            await asyncio.to_thread(cluster.start)

            answers = await asyncio.gather(
                *(client.post("/graphql", json=QUERY, headers=headers) for _ in range(2 * POOL))
            )
            for resp in answers:
                assert resp.status_code == 200, resp.text
                assert data(resp.json()) == {"lists": {"totalCount": 0}}
            after = await fill_pool(db)
            assert not after & before  # new backends: every connection of the old server was replaced
    finally:
        await db.dispose()
