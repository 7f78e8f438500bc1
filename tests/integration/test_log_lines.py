"""`emailkit serve` with EMAILKIT_LOG_FORMAT=json, run as an operator runs it: every line it writes, on
standard output and standard error, uvicorn's and the libraries' included, is a JSON object with at least
`level`, `event` and `timestamp`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_cli import (
    EMAILKIT,
    _base_env,
    _free_port,
    _wait_until_healthy,
    emailkit,
    stop_server,
)
from tests.support.logs import json_lines

REQUIRED = {"level", "event", "timestamp"}


def every_line_is_an_event(*outputs: Path) -> list[dict[str, Any]]:
    events = []
    for output in outputs:
        text = output.read_text()
        for event in json_lines(text):
            assert REQUIRED <= event.keys(), event
            events.append(event)
    return events


def test_serve_writes_only_json_lines(tmp_path: Path) -> None:
    env = {
        **_base_env(tmp_path),
        "EMAILKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "EMAILKIT_LOG_FORMAT": "json",
        # Everything the libraries say too (SQLAlchemy, aiosqlite, Dramatiq, asyncio).
        "EMAILKIT_LOG_LEVEL": "DEBUG",
    }
    port = _free_port()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(EMAILKIT), "serve", "--port", str(port), "--access-log"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(proc, base_url, err)
        key = emailkit(tmp_path, env, "create-api-key", "--name", "ops").stdout.splitlines()[-1]
        with httpx.Client(base_url=base_url, timeout=10) as client:
            named = client.post(
                "/graphql",
                json={"query": "query Who { viewer { name } }", "operationName": "Who"},
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": "req-0001"},
            )
            assert named.json()["data"] == {"viewer": {"name": "ops"}}
            assert named.headers["x-request-id"] == "req-0001"
            missing = client.get("/no-such-page")
            assert missing.status_code == 404
            made = missing.headers["x-request-id"]
            refused = client.post("/webhooks/sendgrid", content=b"[]")
            assert refused.status_code in (401, 403)
    finally:
        returncode = stop_server(proc)
    assert returncode in (0, -15), err.read_text()
    events = every_line_is_an_event(out, err)
    loggers = {e.get("logger") for e in events}
    # The start-up banner, uvicorn's own lines, its access log and a library's debug lines are all events.
    assert {"emailkit", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any(
        name and name.startswith(("sqlalchemy", "aiosqlite", "asyncio", "dramatiq")) for name in loggers
    )
    [start] = [e for e in events if e["event"] == "starting"]
    assert start["command"] == "serve" and start["mode"] == "embedded"
    access = {e["request_id"]: e for e in events if e.get("logger") == "uvicorn.access" and "request_id" in e}
    assert access["req-0001"] | {"method": "POST", "path": "/graphql", "status": 200} == access["req-0001"]
    assert access[made]["status"] == 404
    # The webhook's refusal names the provider it came for, within the request's context.
    warned = [e for e in events if e.get("webhook") == "sendgrid"]
    assert warned and all("request_id" in e for e in warned), events[-10:]
