"""PubSub implementations: in-process (embedded mode) and Redis (any API process serves any subscriber).

Both carry JSON objects, so a message that works in embedded mode works in production too. Each
subscriber has its own bounded queue on its own event loop; publishing may happen from any thread or
loop (worker threads publish to API subscribers in embedded mode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final
from uuid import uuid4

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub as RedisPubSubConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from emailkit.domain.ports.queue import LiveUpdatesUnavailable, Message, PubSub
from emailkit.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
_CLOSED: Final = object()


def _encode(message: Mapping[str, Any]) -> str:
    if not isinstance(message, Mapping):
        raise TypeError(f"pub/sub messages are JSON objects, not {type(message).__name__}")
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


class Subscription:
    """The messages of one channel for one subscriber, in publication order."""

    def __init__(self, channel: str, loop: asyncio.AbstractEventLoop, queue_size: int) -> None:
        self.channel = channel
        self.loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._done = False
        self._broken: LiveUpdatesUnavailable | None = None

    def deliver(self, payload: str | bytes) -> bool:
        """Queue a raw JSON payload from any thread; False when the subscriber's loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self._put, payload)
        except RuntimeError:
            return False
        return True

    def end(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._put, _CLOSED)
        except RuntimeError:
            pass

    def break_off(self, reason: LiveUpdatesUnavailable) -> None:
        """From any thread: the next read raises `reason` (whatever is still queued is stale now)."""
        self._broken = reason
        self.end()

    def _put(self, item: object) -> None:
        if self._queue.full():
            # A reader that fell behind loses the oldest message; live state is superseded anyway.
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if self._broken is not None:
            self._done = True
            raise self._broken
        if item is _CLOSED:
            self._done = True
            raise StopAsyncIteration
        assert isinstance(item, str | bytes)
        message: Message = json.loads(item)
        return message


class _Fanout:
    """Channel -> local subscriptions; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Register; True when it is the channel's first local subscriber."""
        with self._lock:
            subs = self._subs.setdefault(sub.channel, set())
            subs.add(sub)
            return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister; True when the channel has no local subscriber left."""
        with self._lock:
            subs = self._subs.get(sub.channel)
            if subs is None or sub not in subs:
                return False
            subs.discard(sub)
            if subs:
                return False
            del self._subs[sub.channel]
            return True

    def deliver(self, channel: str, payload: str | bytes) -> None:
        with self._lock:
            subs = list(self._subs.get(channel, ()))
        for sub in subs:
            if not sub.deliver(payload):
                self.remove(sub)

    def count(self, channel: str) -> int:
        with self._lock:
            return len(self._subs.get(channel, ()))

    def end_all(self) -> None:
        with self._lock:
            subs = [sub for group in self._subs.values() for sub in group]
            self._subs.clear()
        for sub in subs:
            sub.end()

    def break_off_all(self, reason: LiveUpdatesUnavailable) -> None:
        """Tell every subscriber its stream has a gap, and forget them (their connection is gone)."""
        with self._lock:
            subs = [sub for group in self._subs.values() for sub in group]
            self._subs.clear()
        for sub in subs:
            sub.break_off(reason)


class InProcessPubSub:
    """Pub/sub within one process (the API and its embedded worker threads)."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._fanout = _Fanout()
        self._closed = False

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        self._fanout.deliver(channel, _encode(message))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Message]]:
        if self._closed:
            raise RuntimeError("pub/sub is closed")
        sub = Subscription(channel, asyncio.get_running_loop(), self.queue_size)
        self._fanout.add(sub)
        try:
            yield sub
        finally:
            self._fanout.remove(sub)

    def subscriber_count(self, channel: str) -> int:
        return self._fanout.count(channel)

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()


class RedisPubSub:
    """Pub/sub through Redis: one connection per process for all subscriptions, multiplexed locally.

    Channels are prefixed (Redis pub/sub ignores database numbers, so the prefix is what separates
    deployments sharing a server). The client binds to the event loop it is first used on. A lost
    connection breaks off every open subscription with :class:`LiveUpdatesUnavailable`: a message
    published meanwhile is lost, and it may be the last one (a campaign's FINISHED), so a subscriber that
    just waited could wait forever. The next subscribe opens a new connection; subscribing while Redis is
    down fails at once (or within SUBSCRIBE_TIMEOUT) with the same error.
    """

    READ_TIMEOUT = 15.0
    SUBSCRIBE_TIMEOUT = 10.0

    def __init__(self, url: str, *, prefix: str = "emailkit:", queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.url = url
        self.prefix = prefix
        self.queue_size = queue_size
        # Named so operators (and tests) can find this process's pub/sub connection in CLIENT LIST.
        self.client_name = f"emailkit-pubsub-{uuid4().hex[:12]}"
        self._fanout = _Fanout()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._sub_client: aioredis.Redis | None = None
        self._conn: RedisPubSubConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    def _bind(self) -> aioredis.Redis:
        if self._closed:
            raise RuntimeError("pub/sub is closed")
        loop = asyncio.get_running_loop()
        if self._client is None:
            self._loop = loop
            self._client = aioredis.Redis.from_url(self.url, socket_keepalive=True)
            # Subscriptions get a client of their own that never reconnects behind our back: a silent
            # reconnect would hide the gap in which messages were lost.
            self._sub_client = aioredis.Redis.from_url(
                self.url,
                client_name=self.client_name,
                socket_keepalive=True,
                health_check_interval=int(self.READ_TIMEOUT),
                retry=Retry(NoBackoff(), 0),
            )
            self._lock = asyncio.Lock()
        elif self._loop is not loop:
            raise RuntimeError("RedisPubSub is bound to another event loop; build one per loop")
        return self._client

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        payload = _encode(message)
        await self._bind().publish(self.prefix + channel, payload)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Message]]:
        self._bind()
        client = self._sub_client
        assert self._lock is not None and client is not None
        loop = asyncio.get_running_loop()
        sub = Subscription(channel, loop, self.queue_size)
        async with self._lock:
            if self._fanout.add(sub):
                self._ready[channel] = loop.create_future()
                if self._conn is None:
                    self._conn = client.pubsub()
                try:
                    await self._conn.subscribe(self.prefix + channel)
                except BaseException as exc:
                    self._fanout.remove(sub)
                    self._ready.pop(channel, None)
                    if isinstance(exc, RedisError | OSError):
                        raise LiveUpdatesUnavailable(f"cannot subscribe: {exc}") from exc
                    raise
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(self._conn), name="emailkit-pubsub")
            ready = self._ready[channel]
        try:
            # Only once Redis confirms are later publications guaranteed to reach this subscriber.
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.SUBSCRIBE_TIMEOUT)
            except TimeoutError as exc:
                raise LiveUpdatesUnavailable("Redis did not confirm the subscription") from exc
            yield sub
        finally:
            await self._unsubscribe(sub)

    async def _unsubscribe(self, sub: Subscription) -> None:
        assert self._lock is not None
        async with self._lock:
            if not self._fanout.remove(sub):
                return
            ready = self._ready.pop(sub.channel, None)
            if ready is not None and not ready.done():
                ready.cancel()
            if self._conn is not None and not self._closed:
                try:
                    await self._conn.unsubscribe(self.prefix + sub.channel)
                except (RedisError, OSError):
                    # The server drops subscriptions with the connection; on reconnect redis-py
                    # resubscribes only what is still wanted.
                    log.debug("unsubscribe from %r failed", sub.channel, exc_info=True)

    async def _read(self, conn: RedisPubSubConnection) -> None:
        try:
            while True:
                msg = await conn.get_message(timeout=self.READ_TIMEOUT)
                if msg is None:
                    continue
                name = msg.get("channel")
                if not isinstance(name, bytes):
                    continue
                channel = name.decode()[len(self.prefix) :]
                kind = msg["type"]
                if kind == "message":
                    self._fanout.deliver(channel, msg["data"])
                elif kind == "subscribe":
                    ready = self._ready.get(channel)
                    if ready is not None and not ready.done():
                        ready.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pub/sub connection lost (%s); open live subscriptions are broken off", exc)
            await self._drop(conn, LiveUpdatesUnavailable(f"connection to Redis lost: {exc}"))

    async def _drop(self, conn: RedisPubSubConnection, reason: LiveUpdatesUnavailable) -> None:
        """Forget a dead connection: its subscribers are told, the next subscribe opens a new one."""
        assert self._lock is not None
        async with self._lock:
            if self._conn is conn:
                self._conn = None
                self._reader = None
            self._fanout.break_off_all(reason)
            for ready in self._ready.values():
                if not ready.done():
                    ready.set_exception(reason)
            self._ready.clear()
        try:
            await conn.aclose()
        except (RedisError, OSError):
            log.debug("closing the lost pub/sub connection failed", exc_info=True)

    def subscriber_count(self, channel: str) -> int:
        return self._fanout.count(channel)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.end_all()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        if self._conn is not None:
            await self._conn.aclose()
        for client in (self._client, self._sub_client):
            if client is not None:
                await client.aclose()


def build_pubsub(settings: Settings) -> PubSub:
    url = settings.resolved_redis_url
    return RedisPubSub(url) if url else InProcessPubSub()
