"""Running workers: threads inside the API process (embedded mode) or `emailkit worker` processes.

Both build the jobs' Runtime through the same builder as the API (passed in by the composition root), on
the worker's own event loop; in embedded mode they share the API's job queue and in-process pub/sub.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import wait as wait_for_exit
from types import FrameType
from typing import Protocol

import dramatiq

from emailkit.db.engine import Database
from emailkit.domain.ports.queue import JobQueue, PubSub
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings, configure_logging
from emailkit.tasks.broker.connection import redact_url
from emailkit.tasks.broker.factory import broker_from_settings
from emailkit.tasks.broker.middleware import RuntimeScope, WorkerRuntime
from emailkit.tasks.broker.queue import DramatiqJobQueue
from emailkit.tasks.broker.registry import job_modules
from emailkit.tasks.queue_depth import QueueDepth
from emailkit.tasks.ticker import Ticker

log = logging.getLogger(__name__)

# Scheduled campaigns start, and lost batches are found again, within about this long.
TICK_SECONDS = 1.0

# Embedded workers poll their in-memory queues this often (ms), which bounds how long shutdown waits.
EMBEDDED_POLL_MS = 250
EMBEDDED_STOP_TIMEOUT = 30.0
# `emailkit worker` waits this long for in-flight jobs after SIGTERM (give orchestrators a grace period
# at least this long; if killed earlier, the jobs are redelivered).
PROCESS_STOP_TIMEOUT_MS = 10 * 60_000


class RuntimeBuilder(Protocol):
    def __call__(
        self,
        settings: Settings,
        db: Database | None = None,
        *,
        jobs: JobQueue | None = None,
        pubsub: PubSub | None = None,
    ) -> Runtime: ...


async def close_runtime(runtime: Runtime, *, close_pubsub: bool = True) -> None:
    """Release what a runtime holds; `close_pubsub=False` when the pub/sub is shared with another."""
    if runtime.live is not None:
        await runtime.live.aclose()
    if runtime.sending is not None:
        await runtime.sending.close()
    if close_pubsub and runtime.pubsub is not None:
        await runtime.pubsub.close()
    await runtime.db.dispose()


def runtime_scope(
    build: RuntimeBuilder, settings: Settings, *, jobs: JobQueue, pubsub: PubSub | None = None
) -> RuntimeScope:
    """The worker's Runtime: its own database engine and throttle; `pubsub` shared when given."""

    @asynccontextmanager
    async def scope() -> AsyncIterator[Runtime]:
        runtime = build(settings, jobs=jobs, pubsub=pubsub)
        try:
            yield runtime
        finally:
            await close_runtime(runtime, close_pubsub=pubsub is None)

    return scope


_started: weakref.WeakSet[dramatiq.Broker] = weakref.WeakSet()


def _boot(broker: dramatiq.Broker) -> None:
    # Dramatiq's CLI sends process_boot; TimeLimit starts its watchdog on it, so without it time limits
    # never fire. Dramatiq supports one Worker per broker and process.
    if broker in _started:
        raise RuntimeError("this broker already ran a worker in this process")
    _started.add(broker)
    broker.emit_after("process_boot")


class EmbeddedWorker:
    """A Dramatiq worker running as threads of the current process."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        scope: RuntimeScope,
        *,
        threads: int,
        queues: set[str] | None = None,
        poll_ms: int = EMBEDDED_POLL_MS,
    ) -> None:
        self.broker = broker
        self.scope = scope
        self.threads = threads
        self.queues = queues
        self.poll_ms = poll_ms
        self._worker: dramatiq.Worker | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self) -> None:
        WorkerRuntime.install(self.broker, self.scope)
        Ticker.install(self.broker, TICK_SECONDS)
        QueueDepth.install(self.broker)
        _boot(self.broker)
        worker = dramatiq.Worker(
            self.broker, queues=self.queues, worker_threads=self.threads, worker_timeout=self.poll_ms
        )
        worker.start()
        self._worker = worker
        log.info("in-process worker started (%d threads)", self.threads)

    async def stop(self, grace: float = EMBEDDED_STOP_TIMEOUT) -> None:
        """Let running jobs finish (up to `grace` seconds), then stop; queued jobs stay queued."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        await asyncio.to_thread(worker.stop, int(grace * 1000))
        log.info("in-process worker stopped")


def embedded_worker(settings: Settings, runtime: Runtime, build: RuntimeBuilder) -> EmbeddedWorker | None:
    """The worker `serve` runs itself when there is no external broker, else None."""
    if settings.broker_url is not None or not isinstance(runtime.jobs, DramatiqJobQueue):
        return None
    scope = runtime_scope(build, settings, jobs=runtime.jobs, pubsub=runtime.pubsub)
    return EmbeddedWorker(runtime.jobs.broker, scope, threads=settings.worker_threads)


class _Signals:
    """First SIGTERM/SIGINT asks for a graceful stop; a second one means "now"."""

    def __init__(self, first: str, again: str, on_again: Callable[[int], None] | None = None) -> None:
        self.stop = threading.Event()
        self.count = 0
        self.first = first
        self.again = again
        self.on_again = on_again or self._exit_now

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            log.info("%s: %s", name, self.first)
            self.stop.set()
        else:
            log.warning("%s again: %s", name, self.again)
            self.on_again(signum)

    @staticmethod
    def _exit_now(signum: int) -> None:
        os._exit(128 + signum)


def use_uvloop() -> bool:
    """Make event loops created from now on uvloop's, where it is installed; whether it is.

    Jobs run on the loop that Dramatiq's AsyncIO middleware creates with ``asyncio.new_event_loop()`` when
    the worker boots, so the policy must be in place before that. A send waits on many round trips per
    message (SMTP replies, ledger commits), and uvloop answers each sooner: bench/send.py measured ≈20%
    more emails per second with it.
    """
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run_worker_process(
    settings: Settings, build: RuntimeBuilder, *, threads: int, supervisor_pid: int | None = None
) -> int:
    """Consume jobs in this process until SIGTERM/SIGINT (or the supervisor's death); return the exit code."""
    assert settings.broker_url is not None
    broker = broker_from_settings(settings)
    WorkerRuntime.install(broker, runtime_scope(build, settings, jobs=DramatiqJobQueue(broker)))
    Ticker.install(broker, TICK_SECONDS)
    QueueDepth.install(broker)
    signals = _Signals(
        "finishing in-flight jobs, then exiting",
        "exiting now; unfinished jobs will be redelivered to other workers",
    )
    signals.install()
    use_uvloop()
    _boot(broker)
    # Modules, the broker and the actors live as long as the process: keep full collections off them.
    gc.freeze()
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    log.info(
        "worker ready: %d threads, broker %s, queues %s, heartbeat timeout %gs",
        threads,
        redact_url(settings.broker_url),
        ", ".join(sorted(broker.get_declared_queues())) or "(none)",
        settings.worker_heartbeat_seconds,
    )
    while not signals.stop.wait(1.0):
        if supervisor_pid is not None and os.getppid() != supervisor_pid:
            log.warning("supervisor exited; finishing in-flight jobs, then exiting")
            break
    worker.stop(PROCESS_STOP_TIMEOUT_MS)
    broker.close()
    log.info("worker stopped")
    return 0


def _logger_levels() -> dict[str, int]:
    loggers = logging.root.manager.loggerDict.items()
    return {name: lg.level for name, lg in loggers if isinstance(lg, logging.Logger) and lg.level}


def _child_main(
    settings: Settings,
    build: RuntimeBuilder,
    threads: int,
    supervisor_pid: int,
    modules: list[str],
    levels: dict[str, int],
) -> None:
    # Own process group: a terminal's Ctrl-C reaches only the supervisor, which relays one SIGTERM.
    os.setpgrp()
    configure_logging(settings)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    # A spawned process starts fresh: declare the same jobs as the supervisor, wherever they came from.
    for module in modules:
        importlib.import_module(module)
    raise SystemExit(run_worker_process(settings, build, threads=threads, supervisor_pid=supervisor_pid))


class _Supervisor:
    """Runs N worker processes, restarts crashed ones, relays SIGTERM/SIGINT to all of them."""

    MAX_RESTART_DELAY = 30.0
    # A process that ran this long before crashing restarts without delay backoff from earlier crashes.
    STABLE_AFTER = 60.0

    def __init__(self, settings: Settings, build: RuntimeBuilder, *, processes: int, threads: int) -> None:
        self.settings = settings
        self.build = build
        self.processes = processes
        self.threads = threads
        # spawn: the children start clean, without this process's threads and sockets.
        self.ctx = multiprocessing.get_context("spawn")
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.restart_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.started_at: dict[int, float] = {}

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(
            target=_child_main,
            args=(self.settings, self.build, self.threads, os.getpid(), job_modules(), _logger_levels()),
            name=f"emailkit-worker-{index}",
        )
        proc.start()
        self.children[index] = proc
        self.started_at[index] = time.monotonic()

    def _relay(self, signum: int) -> None:
        for proc in self.children.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def run(self) -> int:
        signals = _Signals(
            "stopping worker processes gracefully", "telling worker processes to exit now", self._relay
        )
        signals.install()
        for index in range(self.processes):
            self._start(index)
        relayed = False
        code = 0
        while self.children or (self.restart_at and not signals.stop.is_set()):
            if signals.stop.is_set() and not relayed:
                self._relay(signal.SIGTERM)
                relayed = True
                self.restart_at.clear()
            sentinels = [proc.sentinel for proc in self.children.values()]
            if sentinels:
                wait_for_exit(sentinels, timeout=0.5)
            else:
                time.sleep(0.5)
            for index, proc in list(self.children.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del self.children[index]
                if signals.stop.is_set():
                    code = code or (0 if proc.exitcode == 0 else 1)
                    continue
                if time.monotonic() - self.started_at[index] > self.STABLE_AFTER:
                    self.failures[index] = 0
                self.failures[index] = self.failures.get(index, 0) + 1
                delay = min(self.MAX_RESTART_DELAY, 2.0 ** (self.failures[index] - 1))
                log.error(
                    "worker process %d exited with %s; restarting in %gs", proc.pid, proc.exitcode, delay
                )
                self.restart_at[index] = time.monotonic() + delay
            for index, when in list(self.restart_at.items()):
                if time.monotonic() >= when and not signals.stop.is_set():
                    del self.restart_at[index]
                    self._start(index)
        log.info("all worker processes stopped")
        return code


def run_workers(settings: Settings, build: RuntimeBuilder, *, processes: int, threads: int) -> int:
    """`emailkit worker`: consume jobs from EMAILKIT_BROKER_URL until SIGTERM/SIGINT; the exit code."""
    assert settings.broker_url is not None
    log.info(
        "starting %d worker process%s x %d threads on %s",
        processes,
        "" if processes == 1 else "es",
        threads,
        redact_url(settings.broker_url),
    )
    if processes == 1:
        return run_worker_process(settings, build, threads=threads)
    return _Supervisor(settings, build, processes=processes, threads=threads).run()
