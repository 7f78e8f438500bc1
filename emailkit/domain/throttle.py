"""Rate-limited publishing of live state (campaign progress, live stats)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from emailkit.domain.ports.queue import PubSub

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.25


class CoalescingPublisher:
    """Publishes at most one message per channel per `interval` seconds; a burst collapses to its latest.

    Meant for messages that each carry the whole current state, so dropping the intermediate ones loses
    nothing. The first message after a quiet spell goes out at once; later ones wait for the interval and
    only the newest of them is sent. Publishing failures are logged, not raised: live updates must never
    break the work they report on. Use one instance per event loop (it schedules its flushes there).
    """

    _PRUNE_AT = 1024

    def __init__(self, pubsub: PubSub, interval: float = DEFAULT_INTERVAL) -> None:
        self.pubsub = pubsub
        self.interval = interval
        self._last: dict[str, float] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def publish(self, channel: str, message: Mapping[str, Any]) -> None:
        now = asyncio.get_running_loop().time()
        due = self._last.get(channel, float("-inf")) + self.interval
        if now >= due and channel not in self._flushers:
            await self._send(channel, message, now)
            return
        self._pending[channel] = dict(message)
        if channel not in self._flushers:
            self._flushers[channel] = asyncio.create_task(self._flush_later(channel, due - now))

    async def publish_now(self, channel: str, message: Mapping[str, Any]) -> None:
        """Send immediately, superseding anything pending (final states must not wait or be overtaken)."""
        self._cancel(channel)
        await self._send(channel, message, asyncio.get_running_loop().time())

    def pending(self, channel: str) -> bool:
        return channel in self._pending

    async def flush(self) -> None:
        """Send every pending message now."""
        now = asyncio.get_running_loop().time()
        for channel in list(self._pending):
            message = self._pending[channel]
            self._cancel(channel)
            await self._send(channel, message, now)

    async def aclose(self) -> None:
        await self.flush()
        self._last.clear()

    def _cancel(self, channel: str) -> None:
        self._pending.pop(channel, None)
        task = self._flushers.pop(channel, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _flush_later(self, channel: str, delay: float) -> None:
        await asyncio.sleep(delay)
        # Removed before sending so a publish() arriving during the send starts a new interval.
        self._flushers.pop(channel, None)
        message = self._pending.pop(channel, None)
        if message is not None:
            await self._send(channel, message, asyncio.get_running_loop().time())

    async def _send(self, channel: str, message: Mapping[str, Any], now: float) -> None:
        self._last[channel] = now
        if len(self._last) > self._PRUNE_AT:
            self._prune(now)
        try:
            await self.pubsub.publish(channel, message)
        except Exception:
            log.warning("live update on %r not published", channel, exc_info=True)

    def _prune(self, now: float) -> None:
        for channel, last in list(self._last.items()):
            if last + self.interval < now and channel not in self._flushers:
                del self._last[channel]
