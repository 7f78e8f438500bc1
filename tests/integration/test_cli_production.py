"""`emailkit serve --workers N` in production mode. It needs PostgreSQL and Redis, so conftest collects this
module only when both test URLs are set, as CI sets them: it is never skipped.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx

from tests.integration.test_cli import EMAILKIT, Env, _base_env, _free_port, _wait_until_healthy, stop_server
from tests.integration.test_migrations import create_scratch_database, drop_scratch_database
from tests.support.environment import APP_ROLE, PG_URL, REDIS_URL, TEST_SECRET


def test_serve_runs_several_api_processes_in_production_mode(tmp_path: Path) -> None:
    assert PG_URL is not None and REDIS_URL is not None
    url = asyncio.run(create_scratch_database(PG_URL, owner=APP_ROLE))
    env = Env(
        tmp_path,
        {
            **_base_env(tmp_path),
            "EMAILKIT_DATABASE_URL": url,
            "EMAILKIT_SECRET_KEY": TEST_SECRET,
            "EMAILKIT_BROKER_URL": REDIS_URL,
        },
        url,
    )
    port = _free_port()
    log = tmp_path / "serve.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(EMAILKIT), "serve", "--port", str(port), "--migrate", "--workers", "2"],
                cwd=tmp_path,
                env=env.vars,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(proc, base_url, log)
            key = env.run("create-api-key", "--name", "live").stdout.splitlines()[-1]
            # Both processes serve: each keeps its own connection to the client, so two clients in turn
            # reach the processes the kernel hands them to; every answer must be right.
            for _ in range(6):
                with httpx.Client(base_url=base_url, timeout=10) as client:
                    resp = client.post(
                        "/graphql",
                        json={"query": "{ viewer { name } }"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    assert resp.json()["data"] == {"viewer": {"name": "live"}}
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            # uvicorn starts its worker processes through multiprocessing's spawn.
            workers = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
            assert len(workers) == 2, log.read_text()
        finally:
            returncode = stop_server(proc)
        assert returncode in (0, -signal.SIGTERM), log.read_text()
    finally:
        asyncio.run(drop_scratch_database(PG_URL, url))


def test_serve_refuses_a_role_that_bypasses_row_level_security(tmp_path: Path) -> None:
    """The administrator's role (a superuser here) is not held to the workspace policies: refused, with the
    reason, unless the operator says otherwise."""
    assert PG_URL is not None
    url = asyncio.run(create_scratch_database(PG_URL))
    env = Env(
        tmp_path,
        {**_base_env(tmp_path), "EMAILKIT_DATABASE_URL": url, "EMAILKIT_SECRET_KEY": TEST_SECRET},
        url,
    )
    try:
        result = env.run("serve", "--port", str(_free_port()), "--migrate")
        assert result.returncode == 2
        assert "is a superuser" in result.stderr and "EMAILKIT_DATABASE_ALLOW_RLS_BYPASS" in result.stderr
    finally:
        asyncio.run(drop_scratch_database(PG_URL, url))
