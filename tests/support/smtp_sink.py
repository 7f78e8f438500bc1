"""An SMTP server that counts what it accepted, and misbehaves on request.

A recipient counts as delivered only when the server answered 250 to the terminating ``.`` of DATA, which
is when SMTP hands responsibility to the server: a client killed before that point leaves nothing behind
(the transaction is discarded with the connection).

The server is a small asyncio protocol on its own thread and event loop rather than aiosmtpd: aiosmtpd
reads DATA line by line and costs 1-3 ms per message on a busy 2-core machine, which would dominate a
20,000-recipient test; this one looks for the end of DATA with one search and costs some tens of µs. It
speaks what the smtp provider uses (EHLO/HELO, PIPELINING, MAIL, RCPT, DATA, RSET, NOOP, QUIT).

Faults are answered by stage: ``RCPT`` (the address is known) or ``DATA`` (after the whole body arrived).
A 421 reply closes the connection afterwards, as real servers do.

With ``keep=True`` it also keeps each accepted message (envelope sender, recipients, the content with SMTP's
dot-stuffing undone), for tests that look inside the mail (signatures, return paths).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

STAGES = ("RCPT", "DATA")
HOSTNAME = b"sink.test"
_END_OF_DATA = b"\r\n.\r\n"


@dataclass(frozen=True)
class Received:
    """One accepted message: MAIL FROM's address, the accepted recipients and the message as sent."""

    mail_from: str
    recipients: tuple[str, ...]
    content: bytes


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

    def __init__(self, host: str = "127.0.0.1", *, keep: bool = False) -> None:
        self.host = host
        self.keep = keep
        self._messages: list[Received] = []
        self.port = 0
        self._lock = threading.Lock()
        self._accepted: Counter[str] = Counter()
        self._accepted_total = 0
        # Replies other than 250 given, per address (a fault is given only once the address is known).
        self._transient: Counter[str] = Counter()
        self._permanent: Counter[str] = Counter()
        # When each address met a transient refusal or was accepted (monotonic clock).
        self._attempts: dict[str, list[float]] = {}
        self._reject: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- control (any thread) ----------------------------------------------------------------------

    def start(self) -> int:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                server = loop.run_until_complete(
                    loop.create_server(lambda: _SmtpProtocol(self), self.host, self.port)
                )
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            self.port = server.sockets[0].getsockname()[1]
            self._loop = loop
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
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
        return f"smtp://{self.host}:{self.port}?tls=none&timeout=10&helo=client.test"

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

    def messages(self) -> list[Received]:
        """The accepted messages, when started with keep=True."""
        assert self.keep, "CountingSink(keep=True) keeps the messages"
        with self._lock:
            return list(self._messages)

    def transient_given(self) -> Counter[str]:
        with self._lock:
            return Counter(self._transient)

    def permanent_given(self) -> Counter[str]:
        with self._lock:
            return Counter(self._permanent)

    def attempt_times(self) -> dict[str, list[float]]:
        with self._lock:
            return {address: list(times) for address, times in self._attempts.items()}

    def faults_left(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    async def wait_until(self, condition: Callable[[CountingSink], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sink: {what} not reached within {within}s ({self.accepted_total} accepted)"
                )
            await asyncio.sleep(0.05)

    # -- decisions (sink thread) --------------------------------------------------------------------

    def _count(self, address: str, reply: str) -> None:
        if reply.startswith("4"):
            self._transient[address] += 1
            self._attempts.setdefault(address, []).append(time.monotonic())
        else:
            self._permanent[address] += 1

    def _fault(self, stage: str, address: str) -> str | None:
        for fault in self._faults:
            if fault.stage == stage and fault.remaining > 0:
                reply = fault.next_reply()
                self._faults = [f for f in self._faults if f.remaining > 0]
                self._count(address, reply)
                return reply
        return None

    def _rcpt(self, address: str) -> str | None:
        """The refusal for this recipient, or None to accept it."""
        with self._lock:
            rejected = self._reject.get(address)
            if rejected is not None:
                self._count(address, rejected)
                return rejected
            return self._fault("RCPT", address)

    def _end_of_data(self, recipients: list[str], mail_from: str, content: bytes) -> str:
        with self._lock:
            fault = self._fault("DATA", recipients[0])
            if fault is not None:
                for other in recipients[1:]:
                    self._count(other, fault)
                return fault
            self._accepted.update(recipients)
            self._accepted_total += len(recipients)
            if self.keep:
                self._messages.append(Received(mail_from, tuple(recipients), _unstuff(content)))
            now = time.monotonic()
            for address in recipients:
                self._attempts.setdefault(address, []).append(now)
            return f"250 2.0.0 Ok: queued as S{self._accepted_total}"


class _SmtpProtocol(asyncio.Protocol):
    """One client connection: commands are handled as they arrive, so pipelined groups work."""

    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0
        self.has_sender = False
        self.mail_from = ""
        self.recipients: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 " + HOSTNAME + b" ESMTP counting sink\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        # An unfinished DATA is discarded with the connection: nothing was accepted.
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        close = False
        while self.transport is not None and not close:
            if self.in_data:
                reply = self._data_end()
                if reply is None:
                    break
            else:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                reply = self._command(line)
            replies.append(reply.encode() + b"\r\n")
            close = reply.startswith(("421", "221"))
        if self.transport is not None and replies:
            self.transport.write(b"".join(replies))
            if close:
                self.transport.close()
                self.transport = None

    def _data_end(self) -> str | None:
        if self.buffer.startswith(b".\r\n"):
            consumed, end = 3, 0
        else:
            found = self.buffer.find(_END_OF_DATA, max(0, self.scanned - len(_END_OF_DATA)))
            if found < 0:
                self.scanned = len(self.buffer)
                return None
            consumed = found + len(_END_OF_DATA)
            end = found + 2
        content = bytes(self.buffer[:end]) if self.sink.keep else b""
        del self.buffer[:consumed]
        self.scanned = 0
        self.in_data = False
        recipients, self.recipients, self.has_sender = self.recipients, [], False
        return self.sink._end_of_data(recipients, self.mail_from, content)

    def _command(self, line: bytes) -> str:  # noqa: C901 - one branch per SMTP verb, read as the protocol
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"EHLO":
            self._reset()
            return "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 33554432"
        if verb == b"HELO":
            self._reset()
            return "250 sink.test"
        if verb == b"MAIL":
            if not arg.upper().startswith(b"FROM:"):
                return "501 5.5.4 Syntax: MAIL FROM:<address>"
            self._reset()
            self.has_sender = True
            self.mail_from = _address(arg, b"FROM:") or ""
            return "250 2.1.0 Ok"
        if verb == b"RCPT":
            if not self.has_sender:
                return "503 5.5.1 Error: need MAIL command"
            address = _address(arg)
            if address is None:
                return "501 5.5.4 Syntax: RCPT TO:<address>"
            refusal = self.sink._rcpt(address)
            if refusal is not None:
                return refusal
            self.recipients.append(address)
            return "250 2.1.5 Ok"
        if verb == b"DATA":
            if not self.recipients:
                return "554 5.5.1 Error: no valid recipients"
            self.in_data = True
            return "354 End data with <CR><LF>.<CR><LF>"
        if verb == b"RSET":
            self._reset()
            return "250 2.0.0 Ok"
        if verb == b"NOOP":
            return "250 2.0.0 Ok"
        if verb == b"QUIT":
            return "221 2.0.0 Bye"
        return "502 5.5.2 Error: command not recognized"

    def _reset(self) -> None:
        self.has_sender = False
        self.recipients = []


def _unstuff(content: bytes) -> bytes:
    """The message as its sender wrote it: SMTP doubles a line's leading dot (RFC 5321 4.5.2)."""
    unstuffed = content.replace(b"\r\n..", b"\r\n.")
    return unstuffed[1:] if unstuffed.startswith(b"..") else unstuffed


def _address(arg: bytes, verb: bytes = b"TO:") -> str | None:
    if not arg.upper().startswith(verb):
        return None
    start, end = arg.find(b"<"), arg.find(b">")
    if start < 0 or end <= start:
        return None
    return arg[start + 1 : end].decode("utf-8", "replace")
