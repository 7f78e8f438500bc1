"""The job queue against real brokers and real Dramatiq workers.

In-process (embedded) always; Redis when EMAILKIT_TEST_REDIS_URL is set and RabbitMQ when
EMAILKIT_TEST_AMQP_URL is set (an unreachable server is then an error). The `emailkit worker` command is
run as a real process against Redis: SIGTERM finishes in-flight jobs, SIGKILL loses none.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import redis.asyncio as aioredis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries
from sqlalchemy import select
from typer.testing import CliRunner

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import MailingList
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.audience import lists
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from emailkit.tasks.broker.connection import BrokerUnreachable, ping_broker
from emailkit.tasks.broker.factory import broker_from_settings, configure_broker
from emailkit.tasks.broker.middleware import RetryPolicy, RuntimeScope
from emailkit.tasks.broker.queue import DramatiqJobQueue
from emailkit.tasks.broker.registry import job
from emailkit.tasks.worker import EmbeddedWorker
from tests.support.environment import REDIS_URL, TEST_SECRET

AMQP_URL = os.environ.get("EMAILKIT_TEST_AMQP_URL")
BROKERS = ["memory"] + (["redis"] if REDIS_URL else []) + (["amqp"] if AMQP_URL else [])
ROOT = Path(__file__).resolve().parents[2]

# A queue of our own (the servers may be shared); worker processes started by these tests inherit it.
QUEUE = os.environ.setdefault("EMAILKIT_TEST_QUEUE", f"test_{uuid.uuid4().hex[:10]}")


class Recorder:
    """What the test jobs did, written from worker threads and awaited from the test's loop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def record(self, token: str, **info: Any) -> None:
        with self._cond:
            self._runs[token].append(info)
            self._cond.notify_all()

    async def wait_for(self, token: str, count: int = 1, within: float = 20.0) -> list[dict[str, Any]]:
        def wait() -> list[dict[str, Any]]:
            with self._cond:
                done = self._cond.wait_for(lambda: len(self._runs[token]) >= count, within)
                assert done, f"{token}: {len(self._runs[token])} of {count} runs after {within}s"
                return list(self._runs[token])

        return await asyncio.to_thread(wait)


RECORDER = Recorder()


@job("test_queue_create_list", queue=QUEUE)
async def create_list_job(runtime: Runtime, *, token: str, name: str) -> None:
    # A job names its workspace itself (the app's jobs find it from their row); this one writes in the default.
    with workspace_scope(DEFAULT_WORKSPACE_ID):
        async with runtime.db.transaction() as session:
            row = await lists.create_list(session, lists.ListInput(name=name))
    RECORDER.record(token, list_id=row.id)


@job("test_queue_flaky", queue=QUEUE, max_retries=3, min_backoff=200, max_backoff=400)
async def flaky_job(runtime: Runtime, *, token: str, failures: int) -> None:
    message = CurrentMessage.get_current_message()
    assert message is not None
    attempt = message.options.get("retries", 0)
    RECORDER.record(token, attempt=attempt, at=time.monotonic())
    if attempt < failures:
        raise RuntimeError("transient failure")


@job("test_queue_record", queue=QUEUE)
async def record_job(runtime: Runtime, *, token: str) -> None:
    RECORDER.record(token, at=time.monotonic())


@job("test_queue_hold", queue=QUEUE, max_retries=0)
async def hold_job(runtime: Runtime, *, token: str) -> None:
    """For worker processes: says it started, waits for the test's go-ahead, says it finished (in Redis)."""
    assert REDIS_URL is not None
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=None)
    try:
        await client.rpush(f"{token}:started", os.getpid())
        if await client.blpop([f"{token}:release"], timeout=60) is None:
            raise RuntimeError("never released")
        await client.rpush(f"{token}:finished", os.getpid())
    finally:
        await client.aclose()


def broker_url(kind: str) -> str | None:
    return {"memory": None, "redis": REDIS_URL, "amqp": AMQP_URL}[kind]


def scope_for(url: str) -> RuntimeScope:
    @asynccontextmanager
    async def scope() -> AsyncIterator[Runtime]:
        db = Database(url, pool_size=2)
        try:
            yield Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver")
        finally:
            await db.dispose()

    return scope


def cleanup_broker(broker: dramatiq.Broker) -> None:
    if isinstance(broker, RedisBroker):
        for key in broker.client.scan_iter(f"{broker.namespace}:*"):
            broker.client.delete(key)
    elif isinstance(broker, RabbitmqBroker):
        for name in (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"):
            broker.channel.queue_delete(name)
    broker.close()


@asynccontextmanager
async def running_worker(
    kind: str, db_url: str, *, heartbeat_seconds: float = 30, namespace: str | None = None
) -> AsyncIterator[DramatiqJobQueue]:
    broker = configure_broker(
        broker_url(kind),
        heartbeat_seconds=heartbeat_seconds,
        namespace=namespace or f"emailkit-test-{uuid.uuid4().hex[:8]}",
    )
    worker = EmbeddedWorker(broker, scope_for(db_url), threads=2, queues={QUEUE})
    worker.start()
    try:
        yield DramatiqJobQueue(broker)
    finally:
        await worker.stop()
        await asyncio.to_thread(cleanup_broker, broker)


@pytest.fixture
def scratch_db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"


def test_configure_broker_picks_the_broker_from_the_url() -> None:
    memory = configure_broker(None)
    assert isinstance(memory, StubBroker)
    assert dramatiq.get_broker() is memory
    assert any(isinstance(m, AsyncIO) for m in memory.middleware)
    retries = next(m for m in memory.middleware if isinstance(m, Retries))
    assert (retries.max_retries, retries.min_backoff) == (RetryPolicy.max_retries, RetryPolicy.min_backoff_ms)
    assert "test_queue_record" in memory.actors

    on_redis = configure_broker("redis://127.0.0.1:1/0", heartbeat_seconds=7)
    assert isinstance(on_redis, RedisBroker)
    assert on_redis.heartbeat_timeout == 7000
    assert dramatiq.get_broker() is on_redis

    from_settings = broker_from_settings(
        Settings(broker_url="redis://127.0.0.1:1/0", worker_heartbeat_seconds=12)  # type: ignore[arg-type]
    )
    assert isinstance(from_settings, RedisBroker) and from_settings.heartbeat_timeout == 12000

    on_rabbit = configure_broker("amqp://guest:guest@127.0.0.1:1/")
    assert isinstance(on_rabbit, RabbitmqBroker)
    assert dramatiq.get_broker() is on_rabbit


async def test_enqueue_rejects_unknown_jobs_and_non_id_arguments() -> None:
    queue = DramatiqJobQueue(configure_broker(None))
    with pytest.raises(ValueError, match="unknown job"):
        await queue.enqueue("no_such_job", {})
    with pytest.raises(TypeError, match="ids and scalars"):
        await queue.enqueue("test_queue_record", {"token": {"an": "object"}})  # type: ignore[dict-item]


def test_job_options_are_checked_when_declared() -> None:
    @job("test_queue_bad_options", queue=QUEUE, no_such_option=1)
    async def bad(runtime: Runtime) -> None:
        pass

    try:
        with pytest.raises(ValueError, match="no_such_option"):
            configure_broker(None)
    finally:
        from emailkit.tasks.broker import registry

        del registry._JOBS["test_queue_bad_options"]


@pytest.mark.parametrize("kind", BROKERS)
async def test_a_job_runs_in_a_worker_and_writes_to_the_database(kind: str, db: Database) -> None:
    token = uuid.uuid4().hex
    async with running_worker(kind, db.url) as queue:
        await queue.enqueue("test_queue_create_list", {"token": token, "name": f"from {kind}"})
        [run] = await RECORDER.wait_for(token)
    async with db.session() as session:
        row = await session.get(MailingList, run["list_id"])
    assert row is not None and row.name == f"from {kind}"


@pytest.mark.parametrize("kind", BROKERS)
async def test_a_failing_job_is_retried_after_a_backoff(kind: str, scratch_db_url: str) -> None:
    token = uuid.uuid4().hex
    async with running_worker(kind, scratch_db_url) as queue:
        await queue.enqueue("test_queue_flaky", {"token": token, "failures": 1})
        runs = await RECORDER.wait_for(token, count=2)
    assert [r["attempt"] for r in runs] == [0, 1]
    # min_backoff=200 ms: the retry cannot come sooner.
    assert runs[1]["at"] - runs[0]["at"] >= 0.2


@pytest.mark.parametrize("kind", BROKERS)
async def test_a_delayed_job_waits(kind: str, scratch_db_url: str) -> None:
    token = uuid.uuid4().hex
    async with running_worker(kind, scratch_db_url) as queue:
        enqueued = time.monotonic()
        await queue.enqueue("test_queue_record", {"token": token}, delay=0.3)
        [run] = await RECORDER.wait_for(token)
    assert run["at"] - enqueued >= 0.3


async def test_serve_runs_jobs_in_process(db: Database, tmp_path: Path) -> None:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, data_dir=tmp_path)  # type: ignore[arg-type]
    assert settings.broker_url is None
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    token = uuid.uuid4().hex
    async with app.router.lifespan_context(app):
        assert runtime.jobs is not None
        await runtime.jobs.enqueue("test_queue_create_list", {"token": token, "name": "embedded"})
        [run] = await RECORDER.wait_for(token)
    async with db.session() as session:
        names = (await session.scalars(select(MailingList.name))).all()
    assert run["list_id"] and names == ["embedded"]


def test_worker_command_refuses_to_run_without_a_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from emailkit.cli import app as cli

    monkeypatch.delenv("EMAILKIT_BROKER_URL", raising=False)
    monkeypatch.setenv("EMAILKIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMAILKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "EMAILKIT_BROKER_URL is not set" in lines[0]


def test_an_unreachable_broker_is_one_clear_line() -> None:
    with pytest.raises(BrokerUnreachable, match=r"EMAILKIT_BROKER_URL: cannot connect to redis://:\*\*\*@"):
        ping_broker("redis://:hunter2@127.0.0.1:1/0")


if AMQP_URL:

    async def test_rabbitmq_url_reaches_the_server() -> None:
        assert AMQP_URL is not None
        await asyncio.to_thread(ping_broker, AMQP_URL)


# --- `emailkit worker` processes (Redis) ---------------------------------------------------------------


class WorkerProcess:
    """`emailkit worker` in a child process, with this module's test jobs loaded."""

    def __init__(self, tmp: Path, *args: str) -> None:
        assert REDIS_URL is not None
        env = {
            **os.environ,
            "EMAILKIT_BROKER_URL": REDIS_URL,
            "EMAILKIT_DATABASE_URL": f"sqlite:///{tmp / 'worker.db'}",
            "EMAILKIT_SECRET_KEY": TEST_SECRET,
            "EMAILKIT_DATA_DIR": str(tmp),
            "EMAILKIT_WORKER_HEARTBEAT_SECONDS": "7",
            # The banner as a person reads it, which these tests look at.
            "EMAILKIT_LOG_FORMAT": "console",
            "PYTHONPATH": str(ROOT),
        }
        code = "import sys, tests.integration.test_queue; from emailkit.cli import main; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "worker", *args],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip())
                self._cond.notify_all()

    async def wait_for_log(self, text: str, count: int = 1, within: float = 60) -> None:
        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: sum(text in line for line in self.lines) >= count, within)

        assert await asyncio.to_thread(wait), f"no {text!r} in worker log:\n" + "\n".join(self.lines)

    async def exit_code(self, within: float = 60) -> int:
        return await asyncio.to_thread(self.proc.wait, within)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_sync() -> Iterator[redis.Redis]:
    assert REDIS_URL is not None
    # No socket timeout: BLPOP blocks longer than redis-py's default 5 s.
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=None)
    yield client
    client.close()


async def _blpop(client: redis.Redis, key: str, within: int = 60) -> int:
    popped = await asyncio.to_thread(client.blpop, [key], within)
    assert popped is not None, f"nothing on {key} after {within}s"
    return int(popped[1])


async def _enqueue_on_redis(job_name: str, args: dict[str, Any]) -> None:
    # Same namespace as `emailkit worker` (the default), our own queue.
    broker = configure_broker(REDIS_URL)
    try:
        await DramatiqJobQueue(broker).enqueue(job_name, args)
    finally:
        broker.close()


async def _sigterm_lets_in_flight_jobs_finish(tmp_path: Path, redis_sync: redis.Redis) -> None:
    token = f"{QUEUE}:{uuid.uuid4().hex}"
    worker = WorkerProcess(tmp_path, "--processes", "2", "--threads", "1")
    try:
        await worker.wait_for_log("worker ready", count=2)
        assert sum("heartbeat timeout 7s" in line for line in worker.lines) == 2
        # One start-up banner, from the supervisor, naming what the worker runs with.
        assert sum(line.startswith("emailkit ") and line.endswith(" worker") for line in worker.lines) == 1
        # The banner's rows, whatever width its longest label gives the first column.
        rows = {tuple(line.split(None, 1)) for line in worker.lines if line.startswith("  ")}
        assert ("mode", "production") in rows
        assert ("broker", REDIS_URL) in rows
        assert ("workers", "2 worker processes x 1 threads") in rows
        await _enqueue_on_redis("test_queue_hold", {"token": token})
        pid = await _blpop(redis_sync, f"{token}:started")
        worker.proc.send_signal(signal.SIGTERM)
        await worker.wait_for_log("finishing in-flight jobs", count=2)
        assert worker.proc.poll() is None
        # Still running its job: the release comes only now, after the signal.
        redis_sync.rpush(f"{token}:release", 1)
        assert await worker.exit_code() == 0
        assert await _blpop(redis_sync, f"{token}:finished") == pid
        assert any("all worker processes stopped" in line for line in worker.lines)
    finally:
        worker.kill()
        redis_sync.delete(f"{token}:started", f"{token}:finished", f"{token}:release")


async def _sigkill_loses_no_job(tmp_path: Path, redis_sync: redis.Redis, scratch_db_url: str) -> None:
    token = f"{QUEUE}:{uuid.uuid4().hex}"
    worker = WorkerProcess(tmp_path, "--processes", "1", "--threads", "1")
    try:
        await worker.wait_for_log("worker ready")
        await _enqueue_on_redis("test_queue_hold", {"token": token})
        killed_pid = await _blpop(redis_sync, f"{token}:started")
        worker.kill()
        redis_sync.rpush(f"{token}:release", 1)
        # A new worker (this process) gets the job once the dead one's heartbeat is older than 1 s.
        async with running_worker("redis", scratch_db_url, heartbeat_seconds=1, namespace="emailkit"):
            assert await _blpop(redis_sync, f"{token}:started") == os.getpid()
            assert await _blpop(redis_sync, f"{token}:finished") == os.getpid()
        assert killed_pid != os.getpid()
    finally:
        worker.kill()
        redis_sync.delete(f"{token}:started", f"{token}:finished", f"{token}:release")


if REDIS_URL:
    # Collected only with a Redis to test against (never skipped: without it there is nothing to run).
    test_sigterm_lets_in_flight_jobs_finish = _sigterm_lets_in_flight_jobs_finish
    test_sigkill_loses_no_job = _sigkill_loses_no_job
