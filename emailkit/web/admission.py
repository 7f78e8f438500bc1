"""Admission control of ``POST /graphql``: a few requests execute at once, the next ones wait their turn for
a bounded time, and the rest are answered ``503`` with ``Retry-After`` quickly.

Without it, a burst queued inside the process for a database connection: every request started, parsed,
authenticated and then waited up to EMAILKIT_DATABASE_POOL_TIMEOUT (5 s) in SQLAlchemy's pool, so under a
sustained overload every answer took seconds and clients timed out with the work half done. Here a request
holds one of ``limit`` slots (the database pool size: each executing request has a pool connection to
itself, and the overflow is left to wide requests, webhooks and the public routes) from the moment it is
admitted until its response starts.

Order: first come, first served. A closed-loop client (wrk, a frontend with a few tabs, 200 connections
over two processes) keeps about as many requests waiting as it has connections, and when the server is
merely busy FIFO gives each of them the same wait, ≈ connections ÷ throughput, so none of them is shed.
Adaptive LIFO (serving the newest first, as CoDel-style servers do under congestion) answers fresh requests
faster but leaves the oldest waiting until the deadline: errors and a long tail at 200 connections, exactly
what we must not show when the server could serve everyone in time. What LIFO and CoDel protect against, a
standing queue, is bounded here instead by shedding at arrival: a request expected to take longer than the
deadline (its wait: the requests ahead of it times the average time a request holds a slot, divided by
``limit``; then its own time in a slot) is refused before its body is even read, and answered within a
quarter of a second (:data:`SHED_PACE`), so overload is answered fast and the admitted requests are answered
within about the deadline. A request whose wait runs over the deadline anyway (the estimate was optimistic)
is refused when the deadline passes; and once no slot has come free for a whole deadline (the requests
executing hang, e.g. on a lock), newcomers are refused at arrival.

Not gated: WebSocket connections (a subscription lives for hours; each operation on it is rate-limited per
key), multipart uploads (a CSV trickling in must not hold a slot; they are rare, and rate-limited), the
probes, the public tracking/unsubscribe/confirm routes (cheap, and what they do is the recipients' own
action) and the provider webhooks: providers retry a 503, but not all for long (SNS's default HTTP policy
gives up after about a minute), and a bounce or complaint lost is a suppression missed. They wait for a pool
connection as before, out of the pool's overflow.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emailkit.web.graphql import unavailable_response
from emailkit.web.uploads import is_multipart

log = logging.getLogger(__name__)

# The longest a request may be expected to take (waiting, then executing) before it is refused, and the
# longest it waits for a slot. A closed loop of C connections served X requests a second takes about C/X
# per request: the 200 connections over two processes stay unrefused down to ≈ 135 requests a
# second, and under overload the admitted requests are answered in about 1.5 s, within the p99 target of 2 s.
DEFAULT_MAX_WAIT = 1.5
# A refused request may come back in a second: the queue is at most one deadline long.
SHED_RETRY_AFTER = 1
# A refusal is answered this long after the request arrived, not at once. A closed-loop client (wrk, a script
# retrying in a loop) sends the next request the moment it has an answer: refused at once, 200 connections
# came back ≈ 4,000 times a second, each refusal ≈ 120 µs of the process, so half its CPU went to saying
# "busy" and what it served fell from 193 to 77 requests a second (one process, on the shared 2-core
# machine). Paced, they cost ≈ 2%, and a refused client still hears it within a quarter of a second.
SHED_PACE = 0.25
# Weight of the newest request in the average slot time (≈ the last 100 count): all the requests executing
# through a pause (a garbage collection, a slow statement) finish late together; with a heavier weight one
# such pause would pass for a slower server and refuse a burst of requests.
_SMOOTHING = 0.01
# How often shedding is logged (with the count since the last line).
_LOG_EVERY_SECONDS = 10.0
_BUSY_MESSAGE = "The server is busy; try again shortly"


class _Left:
    """The client disconnected while its request waited for a slot."""


_LEFT = _Left()


class AdmissionGate:
    """At most ``limit`` holders at once; waiters are admitted in arrival order, each within ``max_wait``.

    ``max_queue`` bounds memory whatever the estimate says. One gate per process (per event loop).
    """

    def __init__(
        self,
        limit: int,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_queue: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or max_wait <= 0:
            raise ValueError("limit must be at least 1 and max_wait positive")
        self.limit = limit
        self.max_wait = max_wait
        # Far beyond what the deadline lets wait at any realistic speed (1 ms a request, 1.5 s: 1,500).
        self.max_queue = max_queue if max_queue is not None else max(1000, 100 * limit)
        self._clock = clock
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Waiters still wanting a slot (the deque keeps abandoned ones until they reach its head).
        self._waiting = 0
        self._hold: float | None = None
        # When a slot was last taken from a free gate or given back: the gate's last sign of progress.
        self._progressed_at = clock()
        self.shed = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def expected_time(self) -> float:
        """How long a request arriving now would take, its wait and its own execution: 0 with a free slot;
        unknown (0) before any request finished, which leaves the deadline alone to decide."""
        if self._running < self.limit and not self._waiting:
            return 0.0
        if self._hold is None:
            return 0.0
        return (self._waiting + 1) * self._hold / self.limit + self._hold

    def would_shed(self) -> bool:
        """Whether a request arriving now should be refused without waiting."""
        if not self.must_wait():
            return False
        return (
            self._waiting >= self.max_queue
            or self.expected_time() > self.max_wait
            or self._clock() - self._progressed_at > self.max_wait
        )

    async def acquire(self) -> float | None:
        """Wait for a slot; the admission time (pass it to :meth:`release`), or None when refused."""
        if self._running < self.limit and not self._waiting:
            self._running += 1
            self._progressed_at = now = self._clock()
            return now
        if self.would_shed():
            self.shed += 1
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.max_wait):
                await waiter
        except TimeoutError:
            # The time-out cancels the future awaited; one with a result was handed a slot first.
            if waiter.cancelled() or not waiter.done():
                waiter.cancel()
                self._waiting -= 1
                self.shed += 1
                return None
            # Handed a slot just as the deadline passed: use it.
        except BaseException:
            # Cancelled while waiting: give back a slot handed over in the meantime.
            if waiter.done() and not waiter.cancelled():
                self._release_slot()
            else:
                waiter.cancel()
                self._waiting -= 1
            raise
        return self._clock()

    def must_wait(self) -> bool:
        """Whether a request arriving now would wait for its slot."""
        return self._running >= self.limit or self._waiting > 0

    def release(self, admitted_at: float, *, served: bool = True) -> None:
        """Give a slot back; ``served`` False for one that was never used (its time says nothing)."""
        self._progressed_at = now = self._clock()
        if served:
            held = now - admitted_at
            self._hold = held if self._hold is None else self._hold + _SMOOTHING * (held - self._hold)
        self._release_slot()

    def _release_slot(self) -> None:
        # The slot passes straight to the oldest waiter, so a newcomer never overtakes the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._waiting -= 1
                waiter.set_result(None)
                return
        self._running -= 1


class _Admitted:
    """An admitted request, as its app sees it: the body read before it queued is replayed, and its slot is
    given back once, when the response starts (or when the app ends without one)."""

    __slots__ = ("_admitted_at", "_body", "_gate", "_receive", "_released", "_send")

    def __init__(
        self, gate: AdmissionGate, admitted_at: float, body: list[Message], receive: Receive, send: Send
    ) -> None:
        self._gate = gate
        self._admitted_at = admitted_at
        self._body = body
        self._receive = receive
        self._send = send
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate.release(self._admitted_at)

    async def receive(self) -> Message:
        return self._body.pop(0) if self._body else await self._receive()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.release()
        await self._send(message)


class AdmissionControl:
    """ASGI wrapper of the GraphQL endpoint that runs each HTTP request through an :class:`AdmissionGate`.

    The body is read before the request queues, so a client sending it slowly holds no slot and no place
    in the queue; one that disconnects while it waits leaves the queue (after a run of wrk, or clients timing
    out, the process would otherwise execute the whole queue for nobody); the slot is released when the
    response starts (a slow reader does not hold it either).
    """

    def __init__(self, app: ASGIApp, gate: AdmissionGate, *, pace: float = SHED_PACE) -> None:
        self.app = app
        self.gate = gate
        self.pace = pace
        self._shed_logged = 0
        self._logged_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_multipart(scope):
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        if self.gate.would_shed():
            self.gate.shed += 1
            await self._refuse(scope, receive, send, arrived)
            return
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body.append(message)
            if not message.get("more_body", False):
                break
        turn = await self._turn(receive, body)
        if isinstance(turn, _Left):
            return
        if turn is None:
            await self._refuse(scope, receive, send, arrived)
            return
        admitted = _Admitted(self.gate, turn, body, receive, send)
        try:
            await self.app(scope, admitted.receive, admitted.send)
        finally:
            admitted.release()

    async def _turn(self, receive: Receive, later: list[Message]) -> float | _Left | None:
        """A slot (its admission time), None when refused, or _LEFT when the client disconnected while it
        waited: nobody would read the answer, and executing it would only delay those still waiting."""
        if not self.gate.must_wait():
            return await self.gate.acquire()
        turn = asyncio.ensure_future(self.gate.acquire())
        watch = asyncio.ensure_future(receive())
        try:
            while True:
                await asyncio.wait((turn, watch), return_when=asyncio.FIRST_COMPLETED)
                if not watch.done() or turn.done():
                    break
                message = watch.result()
                if message["type"] == "http.disconnect":
                    break
                later.append(message)  # not expected once the body is complete; kept for the app
                watch = asyncio.ensure_future(receive())
        except BaseException:
            await self._stop(turn, watch, keep_slot=False)
            raise
        admitted_at = await self._stop(turn, watch, keep_slot=True)
        if not watch.cancelled():
            message = watch.result()
            if message["type"] == "http.disconnect":
                if admitted_at is not None:
                    self.gate.release(admitted_at, served=False)
                return _LEFT
            later.append(message)
        return admitted_at

    async def _stop(
        self, turn: asyncio.Future[float | None], watch: asyncio.Future[Message], *, keep_slot: bool
    ) -> float | None:
        """End both tasks; the slot the turn got, if any (given back unless ``keep_slot``)."""
        for task in (turn, watch):
            task.cancel()
        # A slot handed over as the wait was cancelled is passed on by acquire() itself.
        await asyncio.gather(turn, watch, return_exceptions=True)
        admitted_at = None if turn.cancelled() else turn.result()
        if admitted_at is not None and not keep_slot:
            self.gate.release(admitted_at, served=False)
            return None
        return admitted_at

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, arrived: float) -> None:
        now = time.monotonic()
        if self.pace > 0 and now - arrived < self.pace:
            await asyncio.sleep(self.pace - (now - arrived))
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            log.warning(
                "overloaded: %d GraphQL requests answered 503 (%d executing, %d waiting, about %.2f s to answer)",
                self.gate.shed - self._shed_logged,
                self.gate.running,
                self.gate.waiting,
                self.gate.expected_time(),
            )
            self._shed_logged = self.gate.shed
            self._logged_at = now
        await unavailable_response(retry_after=SHED_RETRY_AFTER, message=_BUSY_MESSAGE)(scope, receive, send)
