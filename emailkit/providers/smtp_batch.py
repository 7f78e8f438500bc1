"""One batch over the SMTP pool: the senders that drive the pool's sessions through the batch's queue, the
results collected as the replies arrive (:class:`Finisher`), handed to the result hook a group at a time
(:class:`Reporter`), and the commit hook run for many sessions at once (:class:`CommitGate`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from emailkit.domain.ports.provider import CommitHook, OutgoingMessage, ResultHook, SendResult
from emailkit.providers.smtp_job import Admit, SmtpJob
from emailkit.providers.smtp_pool import SmtpPool
from emailkit.providers.smtp_session import SmtpConnectError

log = logging.getLogger(__name__)


class Senders:
    """Up to one sender per pool session, each sending from the batch's shared queue until it is empty or no
    session can be opened; the last one to stop closes the finisher.

    What is left in the queue afterwards was never attempted; :attr:`connect_errors` says why.
    """

    def __init__(self, pool: SmtpPool, queue: deque[SmtpJob], finisher: Finisher) -> None:
        self.pool = pool
        self.queue = queue
        self.finisher = finisher
        self.count = min(pool.size, len(queue))
        self._running = self.count
        self.connect_errors: list[str] = []

    async def run(self, on_commit: CommitHook | None, on_result: ResultHook | None) -> None:
        gate: CommitGate | None = None
        reporter = Reporter(on_result, self.finisher) if on_result is not None and self.count else None
        try:
            async with asyncio.TaskGroup() as group:
                gate = CommitGate(on_commit, group) if on_commit is not None else None
                if reporter is not None:
                    group.create_task(reporter.run())
                for _ in range(self.count):
                    group.create_task(self._send(gate))
        except BaseExceptionGroup:
            # The hook's own error, not the group it came wrapped in (the pipeline expects it as raised).
            if gate is not None and gate.error is not None:
                raise gate.error from None
            raise

    async def _send(self, admit: Admit | None) -> None:
        session = await self.pool.acquire()
        try:
            while self.queue:
                if not session.connected:
                    try:
                        await session.connect()
                    except SmtpConnectError as exc:
                        self.connect_errors.append(str(exc))
                        return
                await session.run(self.queue, self.finisher, admit)
        finally:
            self.pool.release(session)
            self._running -= 1
            if self._running == 0:
                self.finisher.close()


class Reporter:
    """Hands results to the result hook a group at a time while the sessions go on; stops once they are done
    (what is left then comes back with the batch's results).

    A hook that fails (the database went away) ends the reporting but not the sessions: the group it could
    not take, and every result after it, come back with the batch's results, as they did before groups were
    reported early, and the caller records them or finds out for itself that it cannot.
    """

    def __init__(self, hook: ResultHook, finisher: Finisher) -> None:
        self._hook = hook
        self._finisher = finisher

    async def run(self) -> None:
        finisher = self._finisher
        while True:
            await finisher.due.wait()
            if finisher.closed:
                return
            try:
                await self._hook(finisher.take())
            except Exception as exc:
                log.warning(
                    "recording results as they arrive failed (%s); the rest are recorded with the batch", exc
                )
                return


class CommitGate:
    """Runs the commit hook for each message right before its final hand-over, many messages per call.

    Committing each message just before its body and terminating "." are written keeps what a crash can
    leave in doubt to the messages in that instant (at most one per session), where one commit for the
    whole batch up front would leave every message not yet sent recorded as handed over. Sessions whose
    server is ready while one hook call runs are committed together by the next.
    """

    def __init__(self, hook: CommitHook, group: asyncio.TaskGroup) -> None:
        self._hook = hook
        self._group = group
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._running = False
        self.error: Exception | None = None

    async def __call__(self, job: SmtpJob) -> None:
        if self.error is not None:
            raise self.error
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((job.message.delivery_id, ready))
        if not self._running:
            self._running = True
            self._group.create_task(self._drain())
        await ready

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    await self._hook([delivery_id for delivery_id, _ in group])
                except Exception as exc:
                    self.error = exc
                    group += self._waiting
                    self._waiting = []
                    for _, ready in group:
                        if not ready.done():
                            ready.set_exception(exc)
                    return
                for _, ready in group:
                    if not ready.done():
                        ready.set_result(None)
        finally:
            self._running = False


class Finisher:
    """Collects each message's final result; with ``report_every``, also the ones not yet reported."""

    def __init__(self, size: int, report_every: int = 0) -> None:
        self._results: list[SendResult | None] = [None] * size
        self._report_every = report_every
        self._unreported: list[SendResult] = []
        # Set when a group is due, and for good once the last session is done.
        self.due = asyncio.Event()
        self.closed = False

    def __call__(self, job: SmtpJob, result: SendResult) -> None:
        self._results[job.index] = result
        if self._report_every:
            self._unreported.append(result)
            if len(self._unreported) >= self._report_every:
                self.due.set()

    def take(self) -> list[SendResult]:
        group, self._unreported = self._unreported, []
        if not self.closed:
            self.due.clear()
        return group

    def close(self) -> None:
        self.closed = True
        self.due.set()

    def results(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return [
            r if r is not None else SendResult.failed(m.delivery_id, "not attempted", transient=True)
            for r, m in zip(self._results, messages, strict=True)
        ]
