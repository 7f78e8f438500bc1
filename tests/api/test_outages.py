"""Outages answered honestly: a database that is down or out of connections is a 503 with Retry-After and
code SERVICE_UNAVAILABLE, a statement over the timeout is QUERY_TIMEOUT, and a campaign started while the
job queue is unreachable is reported RUNNING with a QUEUE_UNAVAILABLE warning — never "Unexpected error."."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from emailkit.app import build_runtime, create_app
from emailkit.db.engine import Database, failure_of
from emailkit.db.tables.access import Role
from emailkit.db.types import utcnow
from emailkit.domain.apikeys import Principal, generate_key
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import scheduler
from emailkit.schema import build_schema
from emailkit.settings import Settings
from emailkit.tasks.broker.queue import build_job_queue
from emailkit.web.auth import ApiKeyAuth
from emailkit.web.graphql import GraphQLView
from tests.support.environment import PG_URL, TEST_SECRET, pg_async_url
from tests.support.graphql import GQL, data, graphql_runner
from tests.support.redis_server import free_port

QUERY = {"query": "{ lists { totalCount } }"}


def closed_port_url() -> str:
    """A PostgreSQL URL nobody listens on: every connection attempt is refused, as during an outage."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/emailkit"


def assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"], body
    assert "Unexpected error" not in resp.text and "Traceback" not in resp.text and "asyncpg" not in resp.text


@pytest.fixture
async def down_runtime() -> AsyncIterator[Runtime]:
    db = Database(closed_port_url(), pool_timeout=2)
    yield Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver")
    await db.dispose()


async def test_database_outage_is_503_service_unavailable(down_runtime: Runtime) -> None:
    settings = Settings(database_url=down_runtime.db.url, secret_key=TEST_SECRET)  # type: ignore[arg-type]
    app = create_app(settings, down_runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        started = time.monotonic()
        resp = await c.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {generate_key()}"})
        assert time.monotonic() - started < 5
        assert_unavailable(resp)


class _KnownKey(ApiKeyAuth):
    """Authenticates without the database, so the outage is met by the resolvers, mid-execution."""

    async def principal(self, raw_key: str | None) -> Principal | None:
        return Principal(key_id=1, name="admin", role=Role.ADMIN, workspace_id=1)


async def test_outage_during_execution_is_503_too(down_runtime: Runtime) -> None:
    view = GraphQLView(down_runtime, schema=build_schema())
    view.auth = _KnownKey(down_runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=view), base_url="http://testserver") as c:
        resp = await c.post("/graphql", json=QUERY, headers={"Authorization": "Bearer k"})
        assert_unavailable(resp)
        mutation = {
            "query": 'mutation { createList(input: { name: "x", optin: SINGLE }) { userErrors { code } } }'
        }
        assert_unavailable(await c.post("/graphql", json=mutation, headers={"Authorization": "Bearer k"}))


@pytest.mark.postgresql_only
async def test_exhausted_pool_is_503_quickly(db: Database, admin_key: str) -> None:
    # pool_size 1 allows one overflow connection: hold both, as long-running requests would.
    small = Database(db.url, pool_size=1, pool_timeout=0.5)
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET)  # type: ignore[arg-type]
    runtime = Runtime(db=small, secret_key=TEST_SECRET, public_url="http://testserver")
    app = create_app(settings, runtime)
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
            assert (await c.post("/graphql", json=QUERY, headers=headers)).status_code == 200
            async with small.engine.connect() as one, small.engine.connect() as two:
                await one.execute(text("SELECT 1"))
                await two.execute(text("SELECT 1"))
                started = time.monotonic()
                resp = await c.post("/graphql", json=QUERY, headers=headers)
                assert time.monotonic() - started < 3
                assert_unavailable(resp)
            assert (await c.post("/graphql", json=QUERY, headers=headers)).status_code == 200
    finally:
        await small.dispose()


@pytest.mark.postgresql_only
async def test_statement_timeout_is_query_timeout(db: Database, admin_key: str) -> None:
    timed = Database(db.url, statement_timeout=0.2)
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET)  # type: ignore[arg-type]
    app = create_app(settings, Runtime(db=timed, secret_key=TEST_SECRET, public_url="http://testserver"))
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c,
            db.engine.connect() as blocker,
        ):
            # A statement that cannot finish in time: it waits on a lock held by another transaction.
            await blocker.execute(text("LOCK TABLE lists IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            resp = await c.post("/graphql", json=QUERY, headers=headers)
            assert time.monotonic() - started < 3
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TIMEOUT"], body
            assert "Unexpected error" not in resp.text
            await blocker.rollback()
            assert data((await c.post("/graphql", json=QUERY, headers=headers)).json()) == {
                "lists": {"totalCount": 0}
            }
    finally:
        await timed.dispose()


@pytest.mark.postgresql_only
async def test_api_and_workers_get_their_own_statement_timeout(db: Database) -> None:
    assert PG_URL is not None
    settings = Settings(
        database_url=pg_async_url(PG_URL),
        secret_key=TEST_SECRET,
        statement_timeout=7,
        worker_statement_timeout=0,
        database_pool_timeout=2,
    )
    api = build_runtime(settings)
    worker = build_runtime(settings, jobs=build_job_queue(settings))
    try:
        for runtime, expected in ((api, "7s"), (worker, "0")):
            async with runtime.db.session() as session:
                assert (await session.execute(text("SHOW statement_timeout"))).scalar_one() == expected
            assert runtime.db.engine.pool.timeout() == 2  # type: ignore[attr-defined]
    finally:
        await api.db.dispose()
        await worker.db.dispose()


async def make_campaign(gql: GQL) -> str:
    created = data(
        await gql(
            'mutation { createList(input: { name: "L", optin: SINGLE }) { list { id } userErrors { code } } }'
        )
    )
    list_id = created["createList"]["list"]["id"]
    for n in range(3):
        data(
            await gql(
                "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
                {"i": {"email": f"s{n}@example.com", "listIds": [list_id]}},
            )
        )
    body = await gql(
        "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } userErrors { code } } }",
        {
            "i": {
                "name": "c",
                "subject": "Hi",
                "fromEmail": "news@example.com",
                "listIds": [list_id],
                "format": "HTML",
                "body": "<p>Hello</p>",
            }
        },
    )
    campaign_id: str = data(body)["createCampaign"]["campaign"]["id"]
    return campaign_id


@pytest.fixture
async def queue_down_client(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a Redis broker nobody listens on: every enqueue is refused, as during an outage."""
    broken = Settings(
        database_url=runtime.db.url, secret_key=TEST_SECRET, broker_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    runtime.jobs = build_job_queue(broken)
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c
    runtime.jobs = None


@pytest.fixture
async def queue_down(queue_down_client: httpx.AsyncClient, admin_key: str) -> AsyncIterator[GQL]:
    yield graphql_runner(queue_down_client, admin_key)


async def test_start_campaign_with_the_queue_down_reports_running_and_a_warning(
    runtime: Runtime, queue_down: GQL
) -> None:
    gql = queue_down
    campaign_id = await make_campaign(gql)
    body = await gql(
        "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { campaign { id status } "
        "userErrors { code } warnings { code message } } }",
        {"i": {"id": campaign_id}},
    )
    payload = data(body)["startCampaign"]
    assert payload["campaign"] == {"id": campaign_id, "status": "RUNNING"}
    assert payload["userErrors"] == []
    [warning] = payload["warnings"]
    assert warning["code"] == "QUEUE_UNAVAILABLE"
    assert "RUNNING" in warning["message"] and "again automatically" in warning["message"]

    # What the warning promises: the workers' upkeep queues the batches again once the queue is back.
    runtime.jobs = None
    later = utcnow() + timedelta(seconds=61)
    assert await scheduler.requeue_stale_batches(runtime, later, requeue_after=60)


async def test_other_mutations_with_the_queue_down_say_so(queue_down: GQL) -> None:
    """A double opt-in signup is saved, but its confirmation mail cannot be queued: a coded error saying
    exactly that, not "Unexpected error."."""
    gql = queue_down
    created = data(
        await gql(
            'mutation { createList(input: { name: "D", optin: DOUBLE }) { list { id } userErrors { code } } }'
        )
    )
    list_id = created["createList"]["list"]["id"]
    body = await gql(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } } }",
        {"i": {"email": "d@example.com", "listIds": [list_id]}},
    )
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUEUE_UNAVAILABLE"
    assert "saved" in error["message"] and "Unexpected" not in error["message"]
    found = data(await gql('{ subscriber(email: "d@example.com") { subscriptions { status } } }'))
    assert found["subscriber"] == {"subscriptions": [{"status": "UNCONFIRMED"}]}


async def test_public_subscribe_with_the_queue_down_is_503(
    queue_down: GQL, queue_down_client: httpx.AsyncClient
) -> None:
    created = data(
        await queue_down(
            'mutation { createList(input: { name: "P", optin: DOUBLE, visibility: PUBLIC }) { list { id } } }'
        )
    )
    form = {"email": "p@example.com", "lists": created["createList"]["list"]["id"]}
    resp = await queue_down_client.post("/subscribe", json=form)
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0
    assert resp.json() == {"ok": False, "error": "Please try again in a minute"}


def test_socket_errors_of_other_peers_are_not_database_outages() -> None:
    """A mail server or broker refusing a connection says nothing about the database: no 503 for that."""
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 25)")
    except ConnectionRefusedError as exc:
        assert failure_of(exc) is None
