"""Runs the periodic upkeep (emailkit.domain.upkeep) inside every worker, on its event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from emailkit.domain import upkeep
from emailkit.tasks.broker.middleware import WorkerRuntime

log = logging.getLogger(__name__)


class Ticker(Middleware):
    """Starts the upkeep loop once the worker (and its event loop) is up; stops it before shutdown."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._future: concurrent.futures.Future[None] | None = None

    @classmethod
    def install(cls, broker: dramatiq.Broker, interval: float) -> Ticker:
        for middleware in broker.middleware:
            if isinstance(middleware, cls):
                middleware.interval = interval
                return middleware
        ticker = cls(interval)
        broker.add_middleware(ticker)
        return ticker

    async def _loop(self, broker: dramatiq.Broker) -> None:
        holder = WorkerRuntime.of(broker)
        steps = upkeep.Upkeep()
        while True:
            try:
                runtime = await holder.get()
                await steps.tick(runtime)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Upkeep must survive a database or broker blip; the next tick tries again.
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.interval)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            log.warning("no event loop thread: the scheduler does not run in this worker")
            return
        self._future = asyncio.run_coroutine_threadsafe(self._loop(broker), loop_thread.loop)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        future, self._future = self._future, None
        if future is None:
            return
        future.cancel()
        try:
            future.result(timeout=10)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            pass
