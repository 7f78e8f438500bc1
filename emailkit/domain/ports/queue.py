"""Ports: what the use cases need from infrastructure the domain must not import (queue, pub/sub).

emailkit.tasks implements them (Dramatiq for jobs; in-process or Redis for pub/sub) and a composition root
puts the implementations on the :class:`~emailkit.domain.runtime.Runtime`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias

# Jobs carry ids and small scalars only: the database is the truth, a message just says where to look.
JobArg: TypeAlias = str | int | float | bool | list[str] | list[int] | None

Message: TypeAlias = dict[str, Any]


class LiveUpdatesUnavailable(Exception):
    """The pub/sub cannot subscribe now, or lost its connection while subscribed (messages may be missed).

    Raised by `subscribe` and by iterating a subscription, so that a live view is told it went stale
    instead of waiting forever for a message that was published while the connection was down.
    """


class QueueUnavailable(Exception):
    """The job queue could not take a job (its broker is down or unreachable): the job was not enqueued."""


class JobQueue(Protocol):
    async def enqueue(
        self, job: str, args: Mapping[str, JobArg] | None = None, *, delay: float | None = None
    ) -> None:
        """Have a worker run `job` with keyword arguments `args`, after `delay` seconds if given.

        Raises QueueUnavailable when the broker cannot be reached.

        Delivery is at least once: a job may run again after a crash or a retry, so jobs must be idempotent.
        """
        ...


class PubSub(Protocol):
    """Fire-and-forget messages (JSON objects) to whoever is subscribed to a channel right now."""

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """Receive the channel's messages while the context is open.

        Messages published after ``__aenter__`` returns are delivered; iteration ends when the pub/sub is
        closed. A subscriber that falls far behind loses its oldest messages, never the latest. When the
        pub/sub cannot subscribe, or loses its connection, it raises :class:`LiveUpdatesUnavailable`.
        """
        ...

    async def close(self) -> None: ...
