"""An SMTP session, reused across messages, with RFC 2920 pipelining.

aiosmtplib opens each session (TCP or implicit TLS, greeting, EHLO/HELO, STARTTLS, AUTH), then the
transport is handed to a :class:`~emailkit.providers.smtp_replies.ReplyReader`, and replies are matched to
commands in order. aiosmtplib itself answers one command at a time and spends ≈300-500 µs of CPU per
message; here a message costs one round trip: when the server advertises PIPELINING, the body of message *k*
goes out in the same write as the MAIL FROM / RCPT TO / DATA of message *k+1*, and the client waits only for
the 354 that opens each body. Servers without PIPELINING get the classic lock-step dialogue over the same
code.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import aiosmtplib

from emailkit.domain.ports.provider import SendResult
from emailkit.providers.smtp_job import (
    Admit,
    Finish,
    SmtpJob,
    envelope_failure,
    ok_rcpt,
    refused,
    reply_failure,
    reply_text,
)
from emailkit.providers.smtp_replies import ReplyReader

# A job that lost its connection before its body was sent is retried on a fresh connection this many times.
MAX_CONNECTION_TRIES = 3


@dataclass(frozen=True)
class SessionOptions:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    #: "ssl" (implicit TLS), "starttls" (required), "none", or "auto" (STARTTLS when offered).
    tls: str = "auto"
    tls_context: ssl.SSLContext | None = None
    timeout: float = 30.0
    local_hostname: str | None = None
    pipelining: bool = True
    #: Sessions idle longer than this are replaced rather than reused (servers drop idle clients).
    idle_timeout: float = 50.0


class SmtpConnectError(Exception):
    """No usable session could be opened (refused, TLS, authentication, greeting)."""


class _Lost(Exception):
    """The session ended under a transaction (dropped, timed out, or 421)."""


class _Kind(IntEnum):
    MAIL = 0
    RCPT = 1
    DATA = 2
    BODY = 3
    RSET = 4


class SmtpSession:
    def __init__(self, options: SessionOptions, on_connect: Callable[[], None] | None = None) -> None:
        self.options = options
        self._on_connect = on_connect
        self._transport: asyncio.Transport | None = None
        self._lost: str | None = None
        self._closing: str | None = None
        self._expect: deque[tuple[_Kind, SmtpJob | None]] = deque()
        self._active: list[SmtpJob] = []
        self._reader: ReplyReader | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timed_out = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._finish: Finish = lambda job, result: None
        self._admit: Admit | None = None
        self._last_used = 0.0
        self._tick = 1.0
        self.pipelining = False
        #: Messages accepted on the current connection.
        self.delivered = 0

    @property
    def connected(self) -> bool:
        if self._transport is None or self._lost is not None or self._closing is not None:
            return False
        loop = asyncio.get_running_loop()
        return loop.time() - self._last_used < self.options.idle_timeout

    async def connect(self) -> None:
        """(Re)open the session; raise :class:`SmtpConnectError` with the reason when that fails."""
        self.close()
        o = self.options
        client = aiosmtplib.SMTP(
            hostname=o.host,
            port=o.port,
            username=o.username,
            password=o.password,
            use_tls=o.tls == "ssl",
            # None lets aiosmtplib upgrade whenever the server offers STARTTLS.
            start_tls=None if o.tls == "auto" else o.tls == "starttls",
            tls_context=o.tls_context,
            timeout=o.timeout,
            local_hostname=o.local_hostname,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            client.close()
            raise SmtpConnectError(f"cannot open an SMTP session with {o.host}:{o.port}: {exc}") from None
        # uvloop's transports do not subclass asyncio's, hence a cast rather than an isinstance check.
        transport = cast(asyncio.Transport, client.transport)
        reader = ReplyReader(self._on_reply, self._on_lost)
        # From here on the replies are ours; aiosmtplib's protocol object is never called again.
        transport.set_protocol(reader)
        self._reader = reader
        self._transport = transport
        self._lost = None
        self._closing = None
        self._expect.clear()
        self.pipelining = o.pipelining and client.supports_extension("pipelining")
        self.delivered = 0
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        # One timer per session instead of one per reply: it checks the current wait's deadline.
        self._tick = min(1.0, o.timeout / 4)
        self._watchdog = loop.call_later(self._tick, self._watch)
        if self._on_connect is not None:
            self._on_connect()

    def _detach(self) -> asyncio.Transport | None:
        if self._reader is not None:
            self._reader.detach()
            self._reader = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport, self._transport = self._transport, None
        return transport

    def close(self) -> None:
        """Say QUIT without waiting and let the transport flush and close."""
        clean = self._lost is None and not self._expect
        transport = self._detach()
        if transport is None or transport.is_closing():
            return
        if clean:
            transport.write(b"QUIT\r\n")
        transport.close()

    def abort(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        transport = self._detach()
        if transport is not None:
            transport.abort()

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter
        if waiter is not None and not waiter.done() and loop.time() >= self._deadline:
            self._timed_out = True
            waiter.set_result(None)
        self._watchdog = loop.call_later(self._tick, self._watch)

    # -- replies ---------------------------------------------------------------------------------------

    def _on_reply(self, code: int, text: bytes) -> None:
        if code == 421:
            self._closing = reply_text((code, text))
        if not self._expect:
            return  # unsolicited, e.g. an idle-timeout notice before the server hangs up
        kind, job = self._expect.popleft()
        if job is not None:
            if kind is _Kind.MAIL:
                job.mail_reply = (code, text)
            elif kind is _Kind.RCPT:
                job.rcpt_reply = (code, text)
            elif kind is _Kind.DATA:
                job.data_reply = (code, text)
            elif job.empty_body:
                self._done(job, envelope_failure(job))
            elif 200 <= code < 300:
                self.delivered += 1
                self._done(job, SendResult.sent(job.message.delivery_id, job.message_id.strip("<>")))
            else:
                self._done(job, reply_failure(job, (code, text)))
        elif kind is _Kind.RSET and code != 250:
            self._closing = f"RSET refused: {reply_text((code, text))}"
        if not self._expect:
            self._wake()

    def _on_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _done(self, job: SmtpJob, result: SendResult) -> None:
        job.done = True
        if job in self._active:
            self._active.remove(job)
        self._finish(job, result)

    # -- transactions ----------------------------------------------------------------------------------

    def _send(self, chunks: list[bytes], expect: list[tuple[_Kind, SmtpJob | None]]) -> None:
        transport = self._transport
        if transport is None or self._lost is not None:
            raise _Lost(self._lost or "not connected")
        self._expect.extend(expect)
        transport.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    async def _wait_idle(self) -> None:
        if self._expect and self._lost is None:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiter = waiter
            self._deadline = loop.time() + self.options.timeout
            try:
                await waiter
            finally:
                self._waiter = None
            if self._timed_out:
                self._timed_out = False
                raise _Lost(f"no reply from the server within {self.options.timeout:g}s")
        if self._lost is not None:
            raise _Lost(self._lost)
        if self._closing is not None:
            raise _Lost(self._closing)

    def _next(self, queue: deque[SmtpJob]) -> SmtpJob | None:
        if not queue:
            return None
        job = queue.popleft()
        job.reset()
        self._active.append(job)
        return job

    async def run(self, queue: deque[SmtpJob], finish: Finish, admit: Admit | None = None) -> bool:
        """Send jobs from ``queue`` until it is empty (True) or the session is lost (False).

        Jobs arrive with payload and envelope filled in; ``finish`` receives every result; ``admit`` is
        awaited for each job once the server waits for its body, before any of it is written. After a
        loss, jobs whose body went out are finished as transient failures (they may have been delivered);
        the others go back to ``queue``.
        """
        self._finish = finish
        self._admit = admit
        job = self._next(queue)
        if job is None:
            return True
        try:
            if self.pipelining:
                await self._run_pipelined(job, queue)
            else:
                await self._run_lockstep(job, queue)
        except _Lost as exc:
            self._settle_after_loss(str(exc), queue)
            return False
        except BaseException:
            # Cancelled mid-transaction: the dialogue state is unknown, so the connection cannot be reused.
            self.abort("cancelled")
            self._active.clear()
            raise
        finally:
            self._last_used = asyncio.get_running_loop().time()
        return True

    def _settle_after_loss(self, reason: str, queue: deque[SmtpJob]) -> None:
        self.abort(reason)
        self._expect.clear()
        requeue: list[SmtpJob] = []
        for job in list(self._active):
            if job.done:
                continue
            if refused(job):
                self._done(job, envelope_failure(job))
                continue
            if job.body_sent:
                self._done(
                    job,
                    SendResult.failed(
                        job.message.delivery_id,
                        f"{reason} after the message was sent; it may have been delivered",
                        transient=True,
                    ),
                )
                continue
            job.tries += 1
            if job.tries >= MAX_CONNECTION_TRIES:
                self._done(job, SendResult.failed(job.message.delivery_id, reason, transient=True))
            else:
                requeue.append(job)
        self._active.clear()
        queue.extendleft(reversed(requeue))

    async def _run_pipelined(self, job: SmtpJob, queue: deque[SmtpJob]) -> None:
        self._send([job.envelope], [(_Kind.MAIL, job), (_Kind.RCPT, job), (_Kind.DATA, job)])
        current: SmtpJob | None = job
        while current is not None:
            await self._wait_idle()
            data_reply = current.data_reply
            opened = data_reply is not None and data_reply[0] == 354
            accepted = current.mail_reply is not None and current.mail_reply[0] == 250 and ok_rcpt(current)
            if opened and accepted and self._admit is not None:
                await self._admit(current)
            nxt = self._next(queue)
            chunks: list[bytes] = []
            expect: list[tuple[_Kind, SmtpJob | None]] = []
            if opened:
                if accepted:
                    chunks += (current.payload or b"", b".\r\n")
                    current.body_sent = True
                    expect.append((_Kind.BODY, current))
                else:
                    # A server that opened DATA with no accepted recipient gets an empty body, then RSET.
                    current.empty_body = True
                    chunks.append(b".\r\nRSET\r\n")
                    expect += ((_Kind.BODY, current), (_Kind.RSET, None))
            else:
                self._done(current, envelope_failure(current))
                chunks.append(b"RSET\r\n")
                expect.append((_Kind.RSET, None))
            if nxt is not None:
                chunks.append(nxt.envelope)
                expect += ((_Kind.MAIL, nxt), (_Kind.RCPT, nxt), (_Kind.DATA, nxt))
            self._send(chunks, expect)
            current = nxt
        await self._wait_idle()

    async def _run_lockstep(self, job: SmtpJob, queue: deque[SmtpJob]) -> None:
        current: SmtpJob | None = job
        while current is not None:
            mail, rcpt, data = current.envelope.split(b"\r\n")[:3]
            self._send([mail + b"\r\n"], [(_Kind.MAIL, current)])
            await self._wait_idle()
            if current.mail_reply is not None and current.mail_reply[0] == 250:
                self._send([rcpt + b"\r\n"], [(_Kind.RCPT, current)])
                await self._wait_idle()
                if ok_rcpt(current):
                    self._send([data + b"\r\n"], [(_Kind.DATA, current)])
                    await self._wait_idle()
                    if current.data_reply is not None and current.data_reply[0] == 354:
                        if self._admit is not None:
                            await self._admit(current)
                        current.body_sent = True
                        self._send([current.payload or b"", b".\r\n"], [(_Kind.BODY, current)])
                        await self._wait_idle()
                        current = self._next(queue)
                        continue
            self._done(current, envelope_failure(current))
            self._send([b"RSET\r\n"], [(_Kind.RSET, None)])
            await self._wait_idle()
            current = self._next(queue)
