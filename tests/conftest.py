"""Shared fixtures (only fixtures and collection hooks: the helpers tests import live in tests/support/).

The database suites run on SQLite always, and on PostgreSQL too when EMAILKIT_TEST_DATABASE_URL is set
(CI sets it; an unreachable server there is an error, never a skip).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.database import fresh_database, truncate_all
from tests.support.environment import BACKENDS, PG_URL, REDIS_URL, TEST_SECRET
from tests.support.factories import make_key
from tests.support.graphql import GQL, graphql_runner
from tests.support.netns import missing_requirements
from tests.support.pg_cluster import server_bin

# EMAILKIT_TEST_SHARD=K/N: one of N processes running the suite side by side.
pytest_plugins = ["tests.support.sharding"]

# Campaigns of the suites send From example.com addresses that no test verifies as a sending domain: the rule
# is off unless a test turns it on (Settings(require_verified_domains=True), or Runtime's DomainConfig).
os.environ.setdefault("EMAILKIT_REQUIRE_VERIFIED_DOMAINS", "false")

# Modules about Redis-only behaviour are collected only when Redis tests are wanted, so a machine without
# Redis never shows them as skipped and CI (which sets the variable) always runs them.
collect_ignore = (
    ([] if REDIS_URL else ["integration/test_shared_ratelimit.py", "integration/test_log_lines_worker.py"])
    + (
        []
        if REDIS_URL and PG_URL
        else ["integration/test_cli_production.py", "integration/test_metrics_processes.py"]
    )
    + ([] if PG_URL else ["integration/test_migration_pg_trgm.py", "integration/test_crash_flows.py"])
)
# The wraparound and pool restart tests run their own cluster: wherever PostgreSQL is tested and its server
# programs are installed, and always in CI (where missing programs are a failure).
if not (PG_URL and (os.environ.get("CI") or server_bin())):
    collect_ignore += ["integration/test_xid_wraparound.py", "integration/test_pool_restart.py"]
# The several-hosts test builds network namespaces with services of its own: always in CI (where anything
# missing is a failure that names it), elsewhere wherever the machine can build them.
if not (os.environ.get("CI") or not missing_requirements()):
    collect_ignore += ["integration/test_multihost.py"]


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


@pytest.fixture(autouse=True)
def default_workspace() -> Iterator[None]:
    """Tests act in the default workspace, as a key made without --workspace does; tests of isolation open
    their own scopes inside this one."""
    with workspace_scope(DEFAULT_WORKSPACE_ID):
        yield


@pytest.fixture(scope="session", params=BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    db = await fresh_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    await db.dispose()


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


@pytest.fixture
async def admin_key(db: Database) -> str:
    return await make_key(db, Role.ADMIN, "admin")


@pytest.fixture
def gql(client: httpx.AsyncClient, admin_key: str) -> GQL:
    """Run an operation as ADMIN (or with `key=`); returns the decoded body, asserting HTTP 200."""
    return graphql_runner(client, admin_key)
