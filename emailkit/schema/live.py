"""The one way a GraphQL subscription listens to a pub/sub channel, with outages reported as coded errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from graphql import GraphQLError

from emailkit.domain.ports.queue import LiveUpdatesUnavailable, Message
from emailkit.domain.runtime import Runtime


@asynccontextmanager
async def live_updates(runtime: Runtime, channel: str) -> AsyncIterator[AsyncIterator[Message]]:
    """Subscribe to `channel` for the duration of the block.

    When Redis is down, or drops the connection mid-stream, the operation ends with a SERVICE_UNAVAILABLE
    error the client can act on (subscribe again), never silence: a message lost in the gap may be the
    final one, and a client left waiting for it would wait forever.
    """
    if runtime.pubsub is None:
        raise GraphQLError("Live updates are not configured", extensions={"code": "UNAVAILABLE"})
    try:
        async with runtime.pubsub.subscribe(channel) as updates:
            yield updates
    except LiveUpdatesUnavailable as exc:
        raise GraphQLError(
            f"Live updates are unavailable ({exc}); subscribe again to get the current state",
            extensions={"code": "SERVICE_UNAVAILABLE"},
        ) from exc
