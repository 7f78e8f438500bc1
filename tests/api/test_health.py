"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from emailkit.web.health import health_routes
from tests.support.environment import TEST_SECRET


async def test_healthz_needs_no_key(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_with_a_database(client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["database"] == "ok"


async def test_readyz_when_the_database_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
    settings = Settings(database_url=url, secret_key=TEST_SECRET, public_url="http://testserver")
    runtime = Runtime(db=Database(url, pool_size=1), secret_key=TEST_SECRET, public_url=settings.public_url)
    app = create_app(settings, runtime)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            ready = await c.get("/readyz")
            alive = await c.get("/healthz")
    finally:
        await runtime.db.dispose()
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unreachable"}
    # The process itself is fine: liveness must not depend on the database.
    assert alive.status_code == 200


async def test_readyz_answers_when_the_database_hangs() -> None:
    """A server that accepts TCP connections but never speaks: the probe times out instead of hanging."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", pool_size=1)
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://t")
    _, readyz = health_routes(runtime, ready_timeout=0.5)
    app = Starlette(routes=[Route("/readyz", readyz)])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            resp = await asyncio.wait_for(c.get("/readyz"), timeout=10)
    finally:
        silent.close()
        await db.dispose()
    assert resp.status_code == 503
