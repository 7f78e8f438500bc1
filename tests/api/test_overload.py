"""More GraphQL requests than the process executes at once: the excess is answered 503 SERVICE_UNAVAILABLE
with Retry-After (not queued for seconds), the admitted ones get their answer, and the probes, webhooks and
public routes are not held up by the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from emailkit.web.admission import AdmissionGate
from tests.api.test_outages import assert_unavailable
from tests.support.environment import TEST_SECRET
from tests.support.graphql import data

QUERY = {"query": "{ lists { totalCount } }"}
SLOTS = 2


@pytest.fixture
async def small_app(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, AdmissionGate]]:
    """An API process executing SLOTS requests at once (its pool size), with a short queue deadline."""
    small = Database(db.url, pool_size=SLOTS)
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        database_pool_size=SLOTS,
        api_queue_timeout=0.2,
    )
    app = create_app(settings, Runtime(db=small, secret_key=TEST_SECRET, public_url="http://testserver"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            yield client, app.state.admission
    finally:
        await small.dispose()


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.postgresql_only
async def test_excess_requests_are_refused_with_retry_after_while_admitted_ones_finish(
    db: Database, small_app: tuple[httpx.AsyncClient, AdmissionGate], admin_key: str
) -> None:
    client, gate = small_app
    headers = {"Authorization": f"Bearer {admin_key}"}
    assert data((await client.post("/graphql", json=QUERY, headers=headers)).json())

    async with db.engine.connect() as blocker:
        # The admitted requests are slow for as long as this lock is held: they wait on it in PostgreSQL.
        await blocker.execute(text("LOCK TABLE lists IN ACCESS EXCLUSIVE MODE"))
        admitted = [
            asyncio.create_task(client.post("/graphql", json=QUERY, headers=headers)) for _ in range(SLOTS)
        ]
        await until(lambda: gate.running == SLOTS, "both requests executing")
        async with db.engine.connect() as probe:
            await until_blocked(probe, SLOTS)

        excess = await asyncio.gather(
            *(client.post("/graphql", json=QUERY, headers=headers) for _ in range(6))
        )
        for resp in excess:
            assert_unavailable(resp)
            assert resp.headers["Retry-After"] == "1"
        assert gate.shed == 6
        # Probes and public routes do not queue behind GraphQL.
        assert (await client.get("/healthz")).status_code == 200
        assert not any(task.done() for task in admitted)
        await blocker.rollback()

    for resp in await asyncio.gather(*admitted):
        assert resp.status_code == 200, resp.text
        assert data(resp.json()) == {"lists": {"totalCount": 0}}
    assert gate.running == 0 and gate.waiting == 0
    # The queue is gone with the overload: the next request is served.
    assert data((await client.post("/graphql", json=QUERY, headers=headers)).json())


async def until_blocked(probe: AsyncConnection, count: int) -> None:
    """Wait until `count` sessions wait on a lock in PostgreSQL."""
    for _ in range(500):
        waiting = (
            await probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
        ).scalar_one()
        await probe.rollback()
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited on the lock")
