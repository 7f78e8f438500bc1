"""Reads how many messages wait in each job queue, for the ``emailkit_queue_depth`` gauge.

A thread of each worker process asks the broker every ``interval`` seconds (one LLEN per queue on Redis, a
passive declare on RabbitMQ, the in-memory size in embedded mode); every process reports the same figure, and
the gauge keeps the most recent. The labels are the declared queues (and their delay queues): names the code
chooses, a handful.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from emailkit.metrics import record as metrics

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 5.0


def depths(broker: dramatiq.Broker) -> dict[str, int]:
    """Messages waiting in each declared queue (and delay queue) of ``broker``."""
    names = sorted(broker.get_declared_queues() | broker.get_declared_delay_queues())
    if isinstance(broker, RedisBroker):
        pipe = broker.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{broker.namespace}:{name}")
        return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
    if isinstance(broker, RabbitmqBroker):
        found: dict[str, int] = {}
        for name in broker.get_declared_queues():
            ready, delayed, _dead = broker.get_queue_message_counts(name)
            found[name] = ready
            found[f"{name}.DQ"] = delayed
        return found
    if isinstance(broker, StubBroker):
        return {name: broker.queues[name].qsize() for name in names if name in broker.queues}
    return {}


class QueueDepth(Middleware):
    """Samples the queues from a daemon thread while the worker runs."""

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def install(cls, broker: dramatiq.Broker, interval: float = INTERVAL_SECONDS) -> QueueDepth:
        for middleware in broker.middleware:
            if isinstance(middleware, cls):
                return middleware
        sampler = cls(interval)
        broker.add_middleware(sampler)
        return sampler

    def sample(self, broker: dramatiq.Broker) -> None:
        for name, depth in depths(broker).items():
            metrics.queue_depth(name, depth)

    def _run(self, broker: dramatiq.Broker) -> None:
        while not self._stop.is_set():
            try:
                self.sample(broker)
            except Exception as exc:
                # A broker blip must not end the sampling; the next reading comes with the next interval.
                log.debug("reading queue depths failed: %s", exc)
            self._stop.wait(self.interval)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="emailkit-queue-depth", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
