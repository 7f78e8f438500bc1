"""The domain's :class:`~emailkit.domain.ports.queue.JobQueue` port over a Dramatiq broker: jobs enqueued by
name, with ids and scalars for arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import dramatiq
import redis

from emailkit.domain.ports.queue import JobArg, QueueUnavailable
from emailkit.settings import Settings
from emailkit.tasks.broker.factory import broker_from_settings, is_in_process


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
