"""`emailkit worker` with EMAILKIT_LOG_FORMAT=json: every line of the supervisor and of its worker processes is a
JSON object, and a job's lines carry the job's context. Collected only with a Redis to test against."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from tests.integration.test_cli import EMAILKIT, _base_env, emailkit, stop_server
from tests.integration.test_log_lines import every_line_is_an_event
from tests.integration.test_queue import _enqueue_on_redis
from tests.support.environment import REDIS_URL, TEST_SECRET


def _wait_for(err: Path, proc: subprocess.Popen[bytes], found: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while found not in err.read_text():
        assert proc.poll() is None, err.read_text()
        assert time.monotonic() < deadline, err.read_text()
        time.sleep(0.1)


def test_worker_writes_only_json_lines_with_the_job_context(tmp_path: Path) -> None:
    assert REDIS_URL is not None
    env = {
        **_base_env(tmp_path),
        "EMAILKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}",
        "EMAILKIT_BROKER_URL": REDIS_URL,
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_LOG_FORMAT": "json",
        "EMAILKIT_LOG_LEVEL": "DEBUG",
    }
    migrated = emailkit(tmp_path, env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(EMAILKIT), "worker", "--processes", "1", "--threads", "1"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        _wait_for(err, proc, "worker ready")
        # An import that does not exist: the job runs, finds nothing, and says so.
        asyncio.run(_enqueue_on_redis("import_subscribers", {"import_id": 987654}))
        _wait_for(err, proc, '"import": 987654')
    finally:
        returncode = stop_server(proc)
    assert returncode == 0, err.read_text()
    events = every_line_is_an_event(out, err)
    [start] = [e for e in events if e["event"] == "starting"]
    assert start["command"] == "worker" and start["workers"] == "1 worker process x 1 threads"
    job_lines = [e for e in events if e.get("import") == 987654]
    assert job_lines and all(e["job"] == "import_subscribers" for e in job_lines), job_lines
    assert {"dramatiq.worker.WorkerThread", "emailkit.tasks.worker"} <= {e["logger"] for e in events}
