"""What every broker runs around a job: the retry policy and Dramatiq's middleware stack built from it, and
:class:`WorkerRuntime`, the middleware that gives jobs the worker process's Runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
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

from emailkit.domain.runtime import Runtime
from emailkit.tasks.broker.jobcontext import JobContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults for every job; a job overrides them with ``@job(max_retries=..., min_backoff=...)``."""

    max_retries: int = 8
    min_backoff_ms: int = 2_000
    max_backoff_ms: int = 10 * 60_000
    time_limit_ms: int = 10 * 60_000


def middleware_stack(policy: RetryPolicy) -> list[Middleware]:
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
        # Binds the log context and continues the trace of each job (see its module).
        JobContext(),
        # Dramatiq 2.x runs async actors only with this middleware (one event loop thread per process).
        AsyncIO(),
    ]


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
