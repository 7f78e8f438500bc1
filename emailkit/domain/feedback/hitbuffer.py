"""An in-memory buffer of tracking hits, written to storage in batches by a background flusher.

Open pixels and click redirects must answer without waiting for a database write, yet every hit must be
recorded. Hits are appended here (O(1), no I/O) and a flusher task hands them to a bulk ``sink`` every
``flush_interval`` seconds, or sooner once ``batch_size`` are waiting. On a clean stop everything pending is
written before :meth:`HitBuffer.stop` returns.

When storage fails:

* an outage (connection refused or lost, timeouts, a server restarting or overloaded, locks; see
  :func:`is_transient`) keeps the batch and retries it with exponential backoff; new hits keep queueing;
* an error about the data itself means something in the batch can never be stored: the batch is split and
  retried in halves, so only the offending hits are dropped (and counted), never their neighbours;
* memory is bounded by ``max_pending``: once that many hits wait, new ones are dropped, counted, and the count
  is logged (at most every ``log_every`` seconds) so an outage that outlasts the buffer is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from emailkit.domain.transactions import sqlstate

log = logging.getLogger("emailkit.tracking")

T = TypeVar("T")

Sink = Callable[[Sequence[T]], Awaitable[None]]


# SQLSTATE classes that condemn the rows of a batch rather than the moment: data exceptions (22) and integrity
# violations (23). Everything else the database says (connection failures, too many clients, shutdown, lock
# and serialization conflicts, even a missing database or table an operator can fix) is worth retrying.
_BAD_DATA_STATES = ("22", "23")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch later can succeed (the database was unavailable, not the data bad)."""
    if isinstance(exc, OSError | TimeoutError | PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state is not None:
        return not state.startswith(_BAD_DATA_STATES)
    # SQLite has no SQLSTATE: "database is locked", disk I/O and the like are OperationalErrors.
    return isinstance(exc, OperationalError | InterfaceError)


class HitBuffer(Generic[T]):
    def __init__(
        self,
        sink: Sink[T],
        *,
        flush_interval: float = 0.1,
        batch_size: int = 1000,
        max_pending: int = 100_000,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        shutdown_timeout: float = 15.0,
        log_every: float = 10.0,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        if batch_size < 1 or max_pending < batch_size:
            raise ValueError("need 1 <= batch_size <= max_pending")
        self._sink = sink
        self.flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._shutdown_timeout = shutdown_timeout
        self._log_every = log_every
        self._transient = transient
        self._pending: deque[T] = deque()
        self._inflight = 0
        self._wake = asyncio.Event()
        # One writer at a time (the flusher, or a caller of flush()): keeps the order and lets flush() know
        # that nothing is still in flight when it returns.
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropped_unlogged = 0
        self._last_drop_log = 0.0
        self._last_reason = ""
        # Lifetime counters, for logs, tests and benchmarks.
        self.recorded = 0
        self.dropped = 0
        self.failures = 0

    # -- the hot path ------------------------------------------------------------------------------------

    def add(self, hit: T) -> bool:
        """Queue one hit; False when the buffer is full and the hit was dropped. Never blocks."""
        pending = self._pending
        if len(pending) + self._inflight >= self._max_pending:
            self._drop(1, "buffer full")
            return False
        pending.append(hit)
        if self._task is None:
            # Started lazily so an app used without its lifespan (tests, embedding) still records hits.
            self.start()
        elif len(pending) >= self._batch_size:
            self._wake.set()
        return True

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Hits not yet written (queued plus in flight)."""
        return len(self._pending) + self._inflight

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tracking-hit-flusher")

    async def stop(self) -> None:
        """Write everything pending, then stop the flusher. Gives up after ``shutdown_timeout`` seconds (storage
        still failing), logging how many hits were lost."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._shutdown_timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._task = None
        if self._pending:
            lost = len(self._pending)
            self._pending.clear()
            self.dropped += lost
            log.error("stopped with %d tracking hits unwritten: storage kept failing during shutdown", lost)
        self._log_drops(force=True)

    async def flush(self) -> None:
        """Write everything queued so far, including a batch the flusher has in flight (waits through
        transient failures)."""
        delay = self._retry_initial
        while self.pending:
            if not await self._flush_batch():
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
            else:
                delay = self._retry_initial

    # -- the flusher -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            if not self._stopping and len(self._pending) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if not self._pending:
                if self._stopping:
                    return
                continue
            if await self._flush_batch():
                delay = self._retry_initial
                continue
            # Transient failure: back off (a stop request cuts the wait short, not the retrying).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            delay = min(delay * 2, self._retry_max)

    async def _flush_batch(self) -> bool:
        """Write up to one batch; False on a transient failure (the batch is back at the front)."""
        async with self._writing:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        pending = self._pending
        n = min(len(pending), self._batch_size)
        if n == 0:
            return True
        batch = [pending.popleft() for _ in range(n)]
        self._inflight += n
        try:
            await self._write(batch)
        except asyncio.CancelledError:
            pending.extendleft(reversed(batch))
            raise
        except Exception as exc:
            self.failures += 1
            if not self._transient(exc):
                # _write already isolates bad hits; anything else escaping it must not kill the flusher.
                log.exception("writing %d tracking hits failed unexpectedly", n)
                self._drop(n, _describe(exc))
                return True
            pending.extendleft(reversed(batch))
            log.warning("writing %d tracking hits failed (%s); retrying", n, _describe(exc))
            return False
        finally:
            self._inflight -= n
        self._log_drops()
        return True

    async def _write(self, batch: list[T]) -> None:
        """Store ``batch``; split it around hits that can never be stored (dropping only those)."""
        try:
            await self._sink(batch)
        except Exception as exc:
            if self._transient(exc):
                raise
            if len(batch) == 1:
                self._drop(1, f"storage refused it: {_describe(exc)}")
                return
            mid = len(batch) // 2
            await self._write(batch[:mid])
            await self._write(batch[mid:])
            return
        self.recorded += len(batch)

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self._dropped_unlogged += count
        self._last_reason = why
        self._log_drops()

    def _log_drops(self, *, force: bool = False) -> None:
        if not self._dropped_unlogged:
            return
        now = time.monotonic()
        if force or now - self._last_drop_log >= self._log_every:
            log.error(
                "dropped %d tracking hits (last reason: %s); %d dropped since start",
                self._dropped_unlogged,
                self._last_reason,
                self.dropped,
            )
            self._dropped_unlogged = 0
            self._last_drop_log = now


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
