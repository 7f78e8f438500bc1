"""A private asyncio event loop in a daemon thread, for work that must not stall the serving loop.

Recording a batch of tracking hits runs a few milliseconds of Python between its database round trips; on the
loop that answers the pixel and redirect requests that shows up directly as latency. On its own loop in its
own thread, the interpreter hands control back to the serving thread at least every switch interval (5 ms),
and the serving thread runs freely whenever this one waits on the database. Database engines are bound to the
loop that uses them, so work sent here uses its own engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long tasks still running at close get to unwind after being cancelled.
_CLOSE_GRACE = 5.0


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the thread's loop and wait for it without blocking the caller's loop. Cancelling
        the caller cancels the coroutine."""
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure())
        return await asyncio.wrap_future(future)

    async def close(self, final: Callable[[], Awaitable[None]] | None = None) -> None:
        """Cancel what still runs there (giving it a few seconds to unwind), run ``final`` there (e.g. close
        that loop's connections), stop the loop and join the thread (waiting in an executor, not on the
        caller's loop)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_wind_down(final), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        loop.close()


async def _wind_down(final: Callable[[], Awaitable[None]] | None) -> None:
    """Cancel every other task of the running loop, as ``asyncio.run`` does before closing one; then ``final``."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=_CLOSE_GRACE)
    if final is not None:
        await final()
