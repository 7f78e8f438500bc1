"""Fixtures of the API suites (only fixtures: the helpers tests import live in tests/support/)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from emailkit.domain.ports.queue import PubSub
from emailkit.tasks.pubsub import InProcessPubSub, RedisPubSub
from tests.support.environment import REDIS_URL


@pytest.fixture(params=["memory"] + (["redis"] if REDIS_URL else []))
async def live_pubsub(request: pytest.FixtureRequest) -> AsyncIterator[PubSub]:
    """The pub/sub of live subscriptions: in-process, and Redis where the Redis suites run."""
    pubsub: PubSub
    if request.param == "redis":
        assert REDIS_URL is not None
        pubsub = RedisPubSub(REDIS_URL, prefix=f"emailkit-test-{uuid.uuid4().hex[:8]}:")
    else:
        pubsub = InProcessPubSub()
    yield pubsub
    await pubsub.close()
