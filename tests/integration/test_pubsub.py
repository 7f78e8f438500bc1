"""Pub/sub (in-process always, Redis when EMAILKIT_TEST_REDIS_URL is set) and the coalescing publisher."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from emailkit.domain.ports.queue import LiveUpdatesUnavailable, Message
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.tasks.pubsub import InProcessPubSub, RedisPubSub
from tests.support.environment import REDIS_URL

BACKENDS = ["memory"] + (["redis"] if REDIS_URL else [])

PubSubImpl = InProcessPubSub | RedisPubSub


def make(backend: str, prefix: str) -> PubSubImpl:
    if backend == "memory":
        return InProcessPubSub()
    assert REDIS_URL is not None
    return RedisPubSub(REDIS_URL, prefix=prefix)


@pytest.fixture
def prefix() -> str:
    # Redis pub/sub channels ignore the database number: keep ours apart from anyone else's.
    return f"emailkit-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=BACKENDS)
async def pubsub(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[PubSubImpl]:
    impl = make(request.param, prefix)
    yield impl
    await impl.close()


async def receive(sub: AsyncIterator[Message], within: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(sub), within)


async def test_round_trip(pubsub: PubSubImpl) -> None:
    async with pubsub.subscribe("campaign:1") as sub:
        await pubsub.publish("campaign:1", {"sent": 5, "status": "RUNNING", "eta": None})
        assert await receive(sub) == {"sent": 5, "status": "RUNNING", "eta": None}


async def test_every_subscriber_receives_every_message(pubsub: PubSubImpl) -> None:
    async with pubsub.subscribe("c") as first, pubsub.subscribe("c") as second:
        for n in range(3):
            await pubsub.publish("c", {"n": n})
        assert [(await receive(first))["n"] for _ in range(3)] == [0, 1, 2]
        assert [(await receive(second))["n"] for _ in range(3)] == [0, 1, 2]


async def test_only_the_subscribed_channel_is_delivered(pubsub: PubSubImpl) -> None:
    async with pubsub.subscribe("a") as sub:
        await pubsub.publish("b", {"from": "b"})
        await pubsub.publish("a", {"from": "a"})
        assert await receive(sub) == {"from": "a"}


async def test_leaving_the_context_unsubscribes(pubsub: PubSubImpl, prefix: str) -> None:
    async with pubsub.subscribe("gone") as sub:
        assert pubsub.subscriber_count("gone") == 1
        await pubsub.publish("gone", {"n": 1})
        assert await receive(sub) == {"n": 1}
    assert pubsub.subscriber_count("gone") == 0
    if isinstance(pubsub, RedisPubSub):
        # The server must forget the subscription too, or every publish would still be sent to us.
        assert REDIS_URL is not None
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            for _ in range(250):
                [(_, count)] = await client.pubsub_numsub(prefix + "gone")
                if count == 0:
                    break
                await asyncio.sleep(0.02)
            assert count == 0
        finally:
            await client.aclose()


async def test_publishing_from_a_worker_thread_reaches_subscribers(pubsub: PubSubImpl, prefix: str) -> None:
    # Embedded mode: jobs run on Dramatiq's event loop thread and publish to API subscribers; with Redis a
    # worker has its own client (RedisPubSub binds to one loop).
    publisher: PubSubImpl = pubsub if isinstance(pubsub, InProcessPubSub) else make("redis", prefix)

    def publish_from_thread() -> None:
        async def run() -> None:
            await publisher.publish("progress", {"sent": 10})
            if publisher is not pubsub:
                await publisher.close()

        asyncio.run(run())

    async with pubsub.subscribe("progress") as sub:
        thread = threading.Thread(target=publish_from_thread)
        thread.start()
        assert await receive(sub) == {"sent": 10}
        await asyncio.to_thread(thread.join)


async def test_close_ends_subscriptions(pubsub: PubSubImpl) -> None:
    async with pubsub.subscribe("c") as sub:
        await pubsub.publish("c", {"n": 1})
        assert await receive(sub) == {"n": 1}

        async def drain() -> list[Message]:
            return [m async for m in sub]

        reader = asyncio.create_task(drain())
        await pubsub.close()
        assert await asyncio.wait_for(reader, 5) == []
    with pytest.raises(RuntimeError):
        async with pubsub.subscribe("c"):
            pass


@pytest.mark.parametrize("bad", [{"when": object()}, ["not", "an", "object"], {"x": float("nan")}])
async def test_messages_must_be_json_objects(pubsub: PubSubImpl, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        await pubsub.publish("c", bad)


async def test_a_reader_that_falls_behind_keeps_the_latest_messages() -> None:
    pubsub = InProcessPubSub(queue_size=4)
    async with pubsub.subscribe("c") as sub:
        for n in range(10):
            await pubsub.publish("c", {"n": n})
        assert [(await receive(sub))["n"] for _ in range(4)] == [6, 7, 8, 9]
    await pubsub.close()


async def _a_dropped_connection_breaks_off_subscriptions(prefix: str) -> None:
    assert REDIS_URL is not None
    pubsub = RedisPubSub(REDIS_URL, prefix=prefix)
    admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with pubsub.subscribe("c") as sub:
            clients = await admin.client_list()
            ids = [c["id"] for c in clients if c.get("name") == pubsub.client_name and int(c["sub"]) > 0]
            assert len(ids) == 1
            assert await admin.client_kill_filter(_id=ids[0]) == 1
            # Messages published while the connection was down are lost: the subscriber is told, not
            # left waiting for a message that may never come.
            with pytest.raises(LiveUpdatesUnavailable):
                await receive(sub, within=30)
        # A new subscription opens a new connection and gets what is published from then on.
        async with pubsub.subscribe("c") as sub:
            await pubsub.publish("c", {"n": 1})
            assert await receive(sub) == {"n": 1}
    finally:
        await pubsub.close()
        await admin.aclose()


if REDIS_URL:
    # Collected only with a Redis to test against (never skipped: without it there is nothing to run).
    test_a_dropped_connection_breaks_off_subscriptions = _a_dropped_connection_breaks_off_subscriptions


async def test_throttle_coalesces_a_burst_to_first_and_latest(pubsub: PubSubImpl) -> None:
    live = CoalescingPublisher(pubsub, interval=0.2)
    loop = asyncio.get_running_loop()
    async with pubsub.subscribe("progress") as sub:
        started = loop.time()
        for n in range(50):
            await live.publish("progress", {"n": n})
        first = await receive(sub)
        last = await receive(sub)
        arrived = loop.time()
    assert [first["n"], last["n"]] == [0, 49]
    # The latest waited for the interval instead of going out with the burst.
    assert arrived - started >= 0.2 - 0.01
    assert not live.pending("progress")
    await live.aclose()


async def test_throttle_limits_each_channel_separately(pubsub: PubSubImpl) -> None:
    live = CoalescingPublisher(pubsub, interval=60)
    async with pubsub.subscribe("a") as a, pubsub.subscribe("b") as b:
        await live.publish("a", {"n": 1})
        await live.publish("b", {"n": 2})
        assert await receive(a) == {"n": 1}
        assert await receive(b) == {"n": 2}
        await live.publish("a", {"n": 3})
        assert live.pending("a") and not live.pending("b")
        await live.aclose()
        # Closing sends what was still waiting.
        assert await receive(a) == {"n": 3}


async def test_publish_now_supersedes_the_pending_message(pubsub: PubSubImpl) -> None:
    live = CoalescingPublisher(pubsub, interval=60)
    async with pubsub.subscribe("c") as sub:
        await live.publish("c", {"status": "RUNNING", "sent": 1})
        await live.publish("c", {"status": "RUNNING", "sent": 2})
        await live.publish_now("c", {"status": "FINISHED", "sent": 3})
        assert await receive(sub) == {"status": "RUNNING", "sent": 1}
        assert await receive(sub) == {"status": "FINISHED", "sent": 3}
        assert not live.pending("c")
        await live.aclose()
        await pubsub.publish("c", {"marker": True})
        # Nothing stale arrives after the final state: the next message is the marker.
        assert await receive(sub) == {"marker": True}
