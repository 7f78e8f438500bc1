"""Coalescing of ledger writes made by concurrent requests.

A provider with N requests in flight marks each request's recipients SENDING right before it goes out and
records its result right after; one statement per request would cost N commits where one does. A
:class:`Coalescer` runs its flush for one group at a time and puts whatever arrives meanwhile into the next,
so each caller waits for the commit that covers its own items and no longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._waiting: list[tuple[list[T], asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[T]) -> None:
        """Return once a flush that included ``items`` has finished; raise what that flush raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(items), done))
        if self._drainer is None or self._drainer.done():
            # A task of its own: a caller cancelled mid-flush must not cancel the commit the others wait for.
            self._drainer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._flush([item for items, _ in group for item in items])
            except BaseException as exc:
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
