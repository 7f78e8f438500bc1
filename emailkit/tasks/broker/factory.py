"""The broker for a URL: in-process, Redis or RabbitMQ, made Dramatiq's global broker, with every recorded
job declared on it as an actor. No I/O happens here."""

from __future__ import annotations

from collections import defaultdict, deque
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from emailkit.settings import Settings
from emailkit.tasks.broker.middleware import RetryPolicy, WorkerRuntime, middleware_stack
from emailkit.tasks.broker.redis_broker import HeartbeatRedisBroker
from emailkit.tasks.broker.registry import JobSpec, registered_jobs

DEFAULT_HEARTBEAT_SECONDS = 30.0
NAMESPACE = "emailkit"


class _InProcessBroker(StubBroker):
    """The embedded queue: Dramatiq's in-memory broker, with a bounded dead-letter list.

    StubBroker keeps every failed message forever (it is meant for tests); a long-running server must not.
    """

    DEAD_LETTERS_KEPT = 100

    def __init__(self, middleware: list[Middleware]) -> None:
        super().__init__(middleware, fail_fast_default=False)
        self.dead_letters_by_queue = defaultdict(partial(deque, maxlen=self.DEAD_LETTERS_KEPT))  # type: ignore[arg-type]


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
    middleware = middleware_stack(policy or RetryPolicy())
    broker: dramatiq.Broker
    scheme = urlsplit(broker_url).scheme if broker_url else None
    if scheme is None:
        broker = _InProcessBroker(middleware)
    elif scheme in ("redis", "rediss"):
        heartbeat_ms = int(heartbeat_seconds * 1000)
        broker = HeartbeatRedisBroker(
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
