"""Shared fixtures.

The database suites run on SQLite always, and on PostgreSQL too when EMAILKIT_TEST_DATABASE_URL is set
(CI sets it; an unreachable server there is an error, never a skip).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from emailkit import migrate
from emailkit.app import create_app
from emailkit.domain import apikeys
from emailkit.domain.db import Database
from emailkit.domain.models import Base, Role
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.pg_cluster import server_bin

TEST_SECRET = "test-secret-key-0123456789abcdef"
PG_URL = os.environ.get("EMAILKIT_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("EMAILKIT_TEST_REDIS_URL")

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

# Modules about Redis-only behaviour are collected only when Redis tests are wanted, so a machine without
# Redis never shows them as skipped and CI (which sets the variable) always runs them.
collect_ignore = (
    ([] if REDIS_URL else ["integration/test_shared_ratelimit.py"])
    + ([] if REDIS_URL and PG_URL else ["integration/test_cli_production.py"])
    + ([] if PG_URL else ["integration/test_migration_pg_trgm.py"])
)
# The wraparound and pool restart tests run their own cluster: wherever PostgreSQL is tested and its server
# programs are installed, and always in CI (where missing programs are a failure).
if not (PG_URL and (os.environ.get("CI") or server_bin())):
    collect_ignore += ["integration/test_xid_wraparound.py", "integration/test_pool_restart.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked postgresql_only run against PostgreSQL alone: their SQLite variants are deselected."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("database") == "sqlite"
        (dropped if on_sqlite and item.get_closest_marker("postgresql_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _pg_async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


async def _fresh_database(backend: str, tmp: Path) -> Database:
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp / 'test.db'}")
    else:
        assert PG_URL is not None
        db = Database(_pg_async_url(PG_URL), pool_size=5)
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    await migrate.upgrade(db)
    return db


@pytest.fixture(scope="session", params=BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    db = await _fresh_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    await db.dispose()


async def truncate_all(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Database]:
    await truncate_all(database)
    yield database


@pytest.fixture
def settings(db: Database) -> Settings:
    return Settings(database_url=db.url, secret_key=TEST_SECRET, public_url="http://testserver")  # type: ignore[arg-type]


@pytest.fixture
def runtime(db: Database, settings: Settings) -> Runtime:
    return Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url, max_page_size=250)


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


async def make_key(db: Database, role: Role = Role.ADMIN, name: str = "test") -> str:
    async with db.transaction() as session:
        _, raw = await apikeys.create_api_key(session, name, role)
    return raw


@pytest.fixture
async def admin_key(db: Database) -> str:
    return await make_key(db, Role.ADMIN, "admin")


GQL = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def gql(client: httpx.AsyncClient, admin_key: str) -> GQL:
    """Run an operation as ADMIN (or with `key=`); returns the decoded body, asserting HTTP 200."""

    async def run(
        query: str, variables: dict[str, Any] | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        resp = await client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key or admin_key}"},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    return run


def data(body: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a response that must have no top-level errors."""
    assert not body.get("errors"), body.get("errors")
    result: dict[str, Any] = body["data"]
    return result
