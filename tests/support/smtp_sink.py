"""An SMTP server that counts what it accepted, and misbehaves on request.

aiosmtpd runs on its own thread and event loop, so worker processes can talk to it while the test's own
loop waits on the database. A recipient counts as delivered only when the server answered 250 after the
terminating ``.`` of DATA, which is when SMTP hands responsibility to the server: a client killed before
that point leaves nothing behind.

Faults are answered by stage: ``RCPT`` (the address is known) or ``DATA`` (after the whole body arrived).
A 421 reply closes the connection afterwards, as real servers do.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

STAGES = ("RCPT", "DATA")


@dataclass
class _Fault:
    stage: str
    replies: tuple[str, ...]
    remaining: int
    given: int = 0

    def next_reply(self) -> str:
        reply = self.replies[self.given % len(self.replies)]
        self.given += 1
        self.remaining -= 1
        return reply


class CountingSink:
    """Counts accepted recipients; answers chosen replies to chosen addresses or to the next attempts."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._accepted: Counter[str] = Counter()
        self._accepted_total = 0
        # Transient replies given, per address (every fault here is given once the address is known).
        self._transient: Counter[str] = Counter()
        self._permanent: Counter[str] = Counter()
        self._reject: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control (any thread) ----------------------------------------------------------------------

    def start(self) -> int:
        # aiosmtpd logs every command at INFO; at 20,000 messages that costs more than the SMTP itself.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._protocol, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?tls=none&timeout=10"

    def reject(self, addresses: Iterable[str], reply: str) -> None:
        """Answer `reply` (e.g. a 550) to RCPT TO of these addresses until :meth:`accept_everyone`."""
        with self._lock:
            self._reject.update(dict.fromkeys(addresses, reply))

    def accept_everyone(self) -> None:
        with self._lock:
            self._reject.clear()
            self._faults.clear()

    def fail_next(self, times: int, *replies: str, stage: str = "DATA") -> None:
        """Answer the next `times` transactions at `stage` with `replies` in turn, then accept again."""
        assert stage in STAGES and replies and times > 0
        with self._lock:
            self._faults.append(_Fault(stage, replies, times))

    # -- what happened ------------------------------------------------------------------------------

    @property
    def accepted_total(self) -> int:
        with self._lock:
            return self._accepted_total

    def accepted(self) -> Counter[str]:
        with self._lock:
            return Counter(self._accepted)

    def transient_given(self) -> Counter[str]:
        with self._lock:
            return Counter(self._transient)

    def permanent_given(self) -> Counter[str]:
        with self._lock:
            return Counter(self._permanent)

    def faults_left(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    async def wait_until(self, condition: Callable[[CountingSink], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"sink: {what} not reached within {within}s ({self.accepted_total} accepted)")
            await asyncio.sleep(0.05)

    # -- the server (sink thread) -------------------------------------------------------------------

    def _protocol(self) -> SMTP:
        return SMTP(self, hostname="sink.test", ident="counting-sink")

    def _fault(self, stage: str, address: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.stage == stage and fault.remaining > 0:
                    reply = fault.next_reply()
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    self._count(address, reply)
                    return reply
            return None

    def _count(self, address: str, reply: str) -> None:
        (self._transient if reply.startswith("4") else self._permanent)[address] += 1

    @staticmethod
    def _answer(server: SMTP, reply: str) -> str:
        if reply.startswith("421"):
            # Closed once the reply is written (push() writes before this callback runs).
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            rejected = self._reject.get(address)
            if rejected is not None:
                self._count(address, rejected)
        if rejected is not None:
            return self._answer(server, rejected)
        fault = self._fault("RCPT", address)
        if fault is not None:
            return self._answer(server, fault)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        fault = self._fault("DATA", recipients[0]) if recipients else None
        if fault is not None:
            for other in recipients[1:]:
                with self._lock:
                    self._count(other, fault)
            return self._answer(server, fault)
        with self._lock:
            self._accepted.update(recipients)
            self._accepted_total += len(recipients)
            serial = self._accepted_total
        return f"250 2.0.0 Ok: queued as S{serial}"
