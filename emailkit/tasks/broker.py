"""Broker setup and job declaration.

A job is an ``async def`` taking the worker's :class:`Runtime` first and ids as keyword arguments::

    @job("send_batch", queue="sending", time_limit=30 * 60_000)
    async def send_batch(runtime: Runtime, *, campaign_id: int, batch_id: int) -> None: ...

``@job`` only records the function. :func:`configure_broker` builds the broker for a URL (in-process,
Redis or RabbitMQ), installs it as Dramatiq's global broker and declares every recorded job on it as an
actor; domain code then enqueues by name through the :class:`~emailkit.domain.ports.queue.JobQueue` port
(:class:`DramatiqJobQueue`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
import threading
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Concatenate, TypeVar, cast
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from emailkit import tasks
from emailkit.domain.ports.queue import JobArg, QueueUnavailable
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 30.0
DEFAULT_QUEUE = "default"
NAMESPACE = "emailkit"

JobFunction = Callable[Concatenate[Runtime, ...], Awaitable[None]]
F = TypeVar("F", bound=JobFunction)

_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults for every job; a job overrides them with ``@job(max_retries=..., min_backoff=...)``."""

    max_retries: int = 8
    min_backoff_ms: int = 2_000
    max_backoff_ms: int = 10 * 60_000
    time_limit_ms: int = 10 * 60_000


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: JobFunction
    queue: str
    priority: int
    options: Mapping[str, Any] = field(default_factory=dict)


_JOBS: dict[str, JobSpec] = {}


def job(
    name: str | None = None, *, queue: str = DEFAULT_QUEUE, priority: int = 0, **options: Any
) -> Callable[[F], F]:
    """Record an async function as a job; `options` are Dramatiq actor options (max_retries, ...)."""
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"invalid queue name {queue!r}")

    def record(fn: F) -> F:
        is_async = inspect.iscoroutinefunction(fn)
        if not is_async:
            raise TypeError(f"job {fn.__qualname__} must be an async function")
        spec = JobSpec(name or fn.__name__, fn, queue, priority, dict(options))
        known = _JOBS.get(spec.name)
        if known is not None and (known.fn.__module__, known.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"job name {spec.name!r} is already used by {known.fn.__qualname__}")
        _JOBS[spec.name] = spec
        return fn

    return record


def registered_jobs() -> list[JobSpec]:
    for module in tasks.JOB_MODULES:
        importlib.import_module(module)
    return list(_JOBS.values())


def job_modules() -> list[str]:
    """The modules that declared the jobs, for processes that must declare the same ones."""
    return sorted({spec.fn.__module__ for spec in registered_jobs()})


class _InProcessBroker(StubBroker):
    """The embedded queue: Dramatiq's in-memory broker, with a bounded dead-letter list.

    StubBroker keeps every failed message forever (it is meant for tests); a long-running server must not.
    """

    DEAD_LETTERS_KEPT = 100

    def __init__(self, middleware: list[Middleware]) -> None:
        super().__init__(middleware, fail_fast_default=False)
        self.dead_letters_by_queue = defaultdict(partial(deque, maxlen=self.DEAD_LETTERS_KEPT))  # type: ignore[arg-type]


class _RedisBroker(RedisBroker):
    """Redis broker that requeues a dead worker's unacknowledged messages within about one heartbeat.

    Dramatiq moves those messages back ("maintenance") on a random 0.1% of broker commands, which on a
    quiet deployment can take many minutes after a worker was killed. Here every queue gets that
    maintenance at least every `maintenance_interval_ms`, so recovery takes heartbeat timeout + interval.
    """

    def __init__(self, *, maintenance_interval_ms: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.maintenance_interval_ms = maintenance_interval_ms
        self._maintained: dict[str, int] = {}
        self._maintenance_lock = threading.Lock()

    def _maintenance_due(self, command: str, queue_name: str) -> int:
        if command in ("ack", "nack"):
            return 0
        now = current_millis()
        with self._maintenance_lock:
            if now - self._maintained.get(queue_name, 0) < self.maintenance_interval_ms:
                return 0
            self._maintained[queue_name] = now
        return 1

    def _dispatch(self, command: str) -> Callable[..., Any]:
        script = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            # Same arguments as RedisBroker._dispatch; only the maintenance flag is decided differently.
            return script(
                args=[
                    command,
                    current_millis(),
                    queue_name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self._maintenance_due(command, queue_name),
                    self._max_unpack_size(),  # type: ignore[no-untyped-call]
                    *args,
                ],
                keys=keys,
            )

        return do_dispatch


def _middleware(policy: RetryPolicy) -> list[Middleware]:
    return [
        AgeLimit(),
        TimeLimit(time_limit=policy.time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=policy.max_retries,
            min_backoff=policy.min_backoff_ms,
            max_backoff=policy.max_backoff_ms,
        ),
        CurrentMessage(),
        # Dramatiq 2.x runs async actors only with this middleware (one event loop thread per process).
        AsyncIO(),
    ]


def configure_broker(
    broker_url: str | None,
    *,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    policy: RetryPolicy | None = None,
    namespace: str = NAMESPACE,
) -> dramatiq.Broker:
    """Build the broker for `broker_url`, make it Dramatiq's global broker and declare every job on it.

    None gives the in-process broker (embedded mode), ``redis://``/``rediss://`` a Redis broker whose
    workers count as dead after `heartbeat_seconds` without a heartbeat, ``amqp://``/``amqps://`` RabbitMQ
    (which redelivers a dead worker's messages as soon as its connection drops). No I/O happens here.
    """
    middleware = _middleware(policy or RetryPolicy())
    broker: dramatiq.Broker
    scheme = urlsplit(broker_url).scheme if broker_url else None
    if scheme is None:
        broker = _InProcessBroker(middleware)
    elif scheme in ("redis", "rediss"):
        heartbeat_ms = int(heartbeat_seconds * 1000)
        broker = _RedisBroker(
            url=broker_url,
            middleware=middleware,
            namespace=namespace,
            heartbeat_timeout=heartbeat_ms,
            maintenance_interval_ms=max(500, heartbeat_ms // 4),
        )
    elif scheme in ("amqp", "amqps"):
        # Publisher confirms: an enqueue returns only once RabbitMQ has the message.
        broker = RabbitmqBroker(url=broker_url, middleware=middleware, confirm_delivery=True)
    else:
        raise ValueError(f"unsupported broker URL scheme {scheme!r}")
    # Without this Dramatiq falls back to a RabbitMQ broker on localhost wherever it needs "the" broker.
    dramatiq.set_broker(broker)
    for spec in registered_jobs():
        _declare(broker, spec)
    return broker


def broker_from_settings(settings: Settings) -> dramatiq.Broker:
    return configure_broker(settings.broker_url, heartbeat_seconds=settings.worker_heartbeat_seconds)


def is_in_process(broker: dramatiq.Broker) -> bool:
    return isinstance(broker, StubBroker)


def _declare(broker: dramatiq.Broker, spec: JobSpec) -> None:
    unknown = set(spec.options) - broker.actor_options
    if unknown:
        raise ValueError(f"job {spec.name!r}: unknown options {sorted(unknown)}")

    async def run(**kwargs: Any) -> None:
        runtime = await WorkerRuntime.of(broker).get()
        await spec.fn(runtime, **kwargs)

    run.__name__ = run.__qualname__ = spec.name
    run.__module__ = spec.fn.__module__
    dramatiq.Actor(
        cast(Any, run),
        broker=broker,
        actor_name=spec.name,
        queue_name=spec.queue,
        priority=spec.priority,
        options=dict(spec.options),
    )


RuntimeScope = Callable[[], AbstractAsyncContextManager[Runtime]]


class WorkerRuntime(Middleware):
    """Gives jobs the worker process's Runtime: built once, on the worker's event loop, on first use.

    Built lazily because its database engine and pub/sub client belong to the event loop that Dramatiq's
    AsyncIO middleware starts with the worker; closed when the worker shuts down, before that loop stops.
    """

    def __init__(self, scope: RuntimeScope) -> None:
        self.scope = scope
        self._runtime: Runtime | None = None
        self._stack: AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None

    @classmethod
    def install(cls, broker: dramatiq.Broker, scope: RuntimeScope) -> WorkerRuntime:
        for middleware in broker.middleware:
            if isinstance(middleware, cls):
                middleware.scope = scope
                return middleware
        holder = cls(scope)
        # Added after AsyncIO, so its shutdown hook runs first, while the event loop still runs.
        broker.add_middleware(holder)
        return holder

    @classmethod
    def of(cls, broker: dramatiq.Broker) -> WorkerRuntime:
        for middleware in broker.middleware:
            if isinstance(middleware, cls):
                return middleware
        raise RuntimeError("no WorkerRuntime installed on this broker: jobs run only inside a worker")

    async def get(self) -> Runtime:
        if self._runtime is not None:
            return self._runtime
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._runtime is None:
                stack = AsyncExitStack()
                self._runtime = await stack.enter_async_context(self.scope())
                self._stack = stack
        return self._runtime

    async def aclose(self) -> None:
        stack, self._stack, self._runtime, self._lock = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._stack is None:
            return
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            log.warning("worker runtime not closed: the event loop thread is already gone")
            return
        loop_thread.run_coroutine(self.aclose())


def _check_args(job_name: str, args: Mapping[str, JobArg]) -> dict[str, JobArg]:
    scalars = (str, int, float, bool, type(None))
    for key, value in args.items():
        ok = isinstance(value, scalars) or (
            isinstance(value, list) and all(isinstance(v, scalars) for v in value)
        )
        if not ok:
            raise TypeError(
                f"job {job_name!r}: argument {key!r} is a {type(value).__name__}; jobs take ids and scalars"
            )
    return dict(args)


class DramatiqJobQueue:
    """The JobQueue port over a Dramatiq broker."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    async def enqueue(
        self, job: str, args: Mapping[str, JobArg] | None = None, *, delay: float | None = None
    ) -> None:
        actor = self.broker.actors.get(job)
        if actor is None:
            raise ValueError(f"unknown job {job!r}")
        message = actor.message_with_options(kwargs=_check_args(job, args or {}))
        delay_ms = None if delay is None else max(0, int(delay * 1000))
        if is_in_process(self.broker):
            self.broker.enqueue(message, delay=delay_ms)
        else:
            try:
                # Redis and RabbitMQ clients block; keep the event loop free.
                await asyncio.to_thread(self.broker.enqueue, message, delay=delay_ms)
            except (dramatiq.errors.BrokerConnectionError, redis.exceptions.RedisError, OSError) as exc:
                raise QueueUnavailable(f"the job queue is unreachable ({exc or type(exc).__name__})") from exc


def build_job_queue(settings: Settings) -> DramatiqJobQueue:
    return DramatiqJobQueue(broker_from_settings(settings))


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class BrokerUnreachable(Exception):
    """The broker cannot be reached; ``str()`` is one line."""


def ping_broker(broker_url: str) -> None:
    """Fail fast, with one readable line, when a worker's broker is down or the URL is wrong."""
    scheme = urlsplit(broker_url).scheme
    try:
        if scheme in ("redis", "rediss"):
            import redis

            client = redis.Redis.from_url(broker_url, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        else:
            import pika  # type: ignore[import-untyped]

            params = pika.URLParameters(broker_url)
            params.socket_timeout = 5
            params.connection_attempts = 1
            pika.BlockingConnection(params).close()
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        raise BrokerUnreachable(
            f"EMAILKIT_BROKER_URL: cannot connect to {redact_url(broker_url)} ({detail})"
        ) from None
