"""``/metrics`` of real multi-process commands: ``emailkit serve --workers 2`` and
``emailkit worker --processes 2 --metrics-port``, on PostgreSQL and a private redis-server, with nothing set
about metrics but the token.

Either command's scrape, answered by any one of its processes, must report the sums over all of them: every
recipient of a campaign sent by two worker processes, every GraphQL request answered by two API processes.
Collected when EMAILKIT_TEST_DATABASE_URL and EMAILKIT_TEST_REDIS_URL are set (as in CI).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.schema.relay import to_global_id
from tests.integration.test_cli import EMAILKIT, _base_env, _free_port, stop_server
from tests.integration.test_migrations import create_scratch_database, drop_scratch_database
from tests.support.audience import seed_campaign
from tests.support.environment import APP_ROLE, PG_URL, TEST_SECRET
from tests.support.metrics import total
from tests.support.redis_server import RedisServer

TOKEN = "scrape-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECIPIENTS = 300
BATCH_SIZE = 20
# Four processes importing emailkit at once take more than a minute on a busy 2-core machine.
WITHIN = 300.0

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, logs: list[Path], within: float = WITHIN) -> T:
    """Poll `check` until it returns something other than None (or fail, showing the logs)."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in logs)
            pytest.fail(f"{what}: not reached within {within}s\n{shown}")
        time.sleep(0.1)


def _workers(pid: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().partition("=")[::2] for e in entries if b"=" in e)


def _get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


@pytest.fixture
def database_url() -> Iterator[str]:
    assert PG_URL is not None
    url = asyncio.run(create_scratch_database(PG_URL, owner=APP_ROLE))
    try:
        yield url
    finally:
        asyncio.run(drop_scratch_database(PG_URL, url))


def test_two_api_and_two_worker_processes_report_their_sums(
    tmp_path: Path, database_url: str, redis_server: RedisServer
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # What a command killed outright left behind: removed at the next start (its owner is dead).
    dead_pid = next(p for p in range(999_999, 900_000, -1) if not Path(f"/proc/{p}").exists())
    stale = tmp / f"emailkit-metrics-{dead_pid}-x1y2z3"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"\0" * 16)
    env = {
        **_base_env(tmp_path),
        "TMPDIR": str(tmp),
        "EMAILKIT_DATABASE_URL": database_url,
        "EMAILKIT_BROKER_URL": redis_server.url,
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_PROVIDER": "outbox",
        "EMAILKIT_BATCH_SIZE": str(BATCH_SIZE),
        "EMAILKIT_WORKER_THREADS": "1",
        "EMAILKIT_METRICS_TOKEN": TOKEN,
        # The seeded campaign sends From crash.test, which no test verifies.
        "EMAILKIT_REQUIRE_VERIFIED_DOMAINS": "false",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    migrated = subprocess.run(
        [str(EMAILKIT), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    key = subprocess.run(
        [str(EMAILKIT), "create-api-key", "--name", "metrics"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]

    api_port, metrics_port = _free_port(), _free_port()
    api_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    with api_log.open("wb") as a, worker_log.open("wb") as w:
        api = subprocess.Popen(
            [str(EMAILKIT), "serve", "--port", str(api_port), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=a,
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [str(EMAILKIT), "worker", "--processes", "2", "--metrics-port", str(metrics_port)],
            cwd=tmp_path,
            env=env,
            stdout=w,
            stderr=subprocess.STDOUT,
        )
    logs = [api_log, worker_log]
    base = f"http://127.0.0.1:{api_port}"
    scrape = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_for(
            lambda: worker_log.read_text().count("worker ready") == 2 or None, "two worker processes", logs
        )
        wait_for(
            lambda: ((r := _get(f"{base}/healthz")) is not None and r.status_code == 200) or None, "API", logs
        )
        # The worker's scrape wants the token, like the API's.
        assert httpx.get(scrape, timeout=5).status_code == 401
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401
        assert not stale.exists()
        workers = _workers(worker.pid)
        assert len(workers) == 2
        directory = Path(_environ(workers[0])["PROMETHEUS_MULTIPROC_DIR"])
        assert directory.parent == tmp and directory.name.startswith(f"emailkit-metrics-{worker.pid}-")

        campaign_id, _ = asyncio.run(_seed(database_url))
        graphql_requests = 0

        def gql(query: str, **variables: object) -> dict[str, object]:
            nonlocal graphql_requests
            graphql_requests += 1
            # A client per request: the kernel hands each connection to either API process.
            with httpx.Client(base_url=base, timeout=10) as client:
                resp = client.post(
                    "/graphql",
                    json={"query": query, "variables": variables},
                    headers={"Authorization": f"Bearer {key}"},
                )
            assert resp.status_code == 200, resp.text
            body: dict[str, object] = resp.json()
            return body

        global_id = to_global_id("Campaign", campaign_id)
        started = gql(
            "mutation($id: ID!) { startCampaign(input: {id: $id}) { userErrors { code } } }", id=global_id
        )
        assert started["data"] == {"startCampaign": {"userErrors": []}}

        def finished() -> bool | None:
            out = gql("query($id: ID!) { campaign(id: $id) { status } }", id=global_id)
            return True if out["data"] == {"campaign": {"status": "FINISHED"}} else None

        wait_for(finished, "campaign FINISHED", logs)

        text = httpx.get(scrape, headers=AUTH, timeout=10).text
        assert (
            total(text, "emailkit_emails_total", kind="campaign", sender="outbox", status="sent")
            == RECIPIENTS
        )
        assert total(text, "emailkit_batches_total", event="done") == RECIPIENTS // BATCH_SIZE
        # Both processes sent: each wrote its own counters.
        pids = {f.stem.rpartition("_")[2] for f in directory.glob("counter_*.db")}
        assert {str(p) for p in workers} <= pids, (pids, workers)

        # Any API process answers with both processes' figures (scrapes are counted too, under /metrics).
        for _ in range(4):
            with httpx.Client(timeout=10) as client:
                api_text = client.get(f"{base}/metrics", headers=AUTH).text
            counted = total(
                api_text, "emailkit_http_request_duration_seconds_count", route="/graphql", method="POST"
            )
            assert counted == graphql_requests
            assert total(api_text, "emailkit_graphql_duration_seconds_count", operation_type="mutation") == 1
    finally:
        codes = stop_server(worker), stop_server(api)
    assert codes[0] == 0, worker_log.read_text()
    # The command's directory goes with it.
    assert not directory.exists()


async def _seed(url: str) -> tuple[int, list[str]]:
    db = Database(url, pool_size=2)
    try:
        return await seed_campaign(db, RECIPIENTS)
    finally:
        await db.dispose()


def test_a_metrics_port_in_use_stops_the_worker_at_once(tmp_path: Path, redis_server: RedisServer) -> None:
    port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        env = {
            **_base_env(tmp_path),
            "EMAILKIT_BROKER_URL": redis_server.url,
            "EMAILKIT_SECRET_KEY": TEST_SECRET,
        }
        result = subprocess.run(
            [str(EMAILKIT), "worker", "--metrics-port", str(port)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "--metrics-port" in result.stderr and "already in use" in result.stderr
    assert "worker ready" not in result.stderr
