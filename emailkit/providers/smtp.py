"""``smtp``: any SMTP relay, through a pool of reused, pipelined sessions (see ``smtp_session``).

Configured by one URL, ``EMAILKIT_SMTP_URL``::

    smtp://user:password@host:587?tls=starttls      STARTTLS required, then AUTH
    smtps://user:password@host                      implicit TLS (port 465)
    smtp://relay.internal:25?tls=none               plain, no AUTH

Query options: ``tls`` = starttls | ssl | none | auto (default: ssl for smtps:// or port 465, otherwise
auto = STARTTLS when the server offers it); ``verify=false`` skips certificate checks (private relays
with self-signed certificates); ``cafile=/path.pem`` trusts a private CA; ``timeout`` seconds per reply
(default 30); ``helo`` the name to greet with (default: this host's FQDN); ``pipelining=false`` never
pipelines even when the server offers it. User and password are percent-decoded.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

from emailkit.domain.ports.dkim import DkimKeyring
from emailkit.domain.ports.provider import (
    CommitHook,
    OutgoingMessage,
    ProbeResult,
    ResultHook,
    SenderConfigError,
    SendResult,
)
from emailkit.providers.dkim import DkimSigner
from emailkit.providers.dkim_keys import BatchSigners, MessageSigning
from emailkit.providers.mime import MimeBuilder, MimeError, ascii_email
from emailkit.providers.sender_config import refuse_unknown, required_text, text
from emailkit.providers.smtp_batch import Finisher, Senders
from emailkit.providers.smtp_job import SmtpJob
from emailkit.providers.smtp_pool import SmtpPool
from emailkit.providers.smtp_session import SessionOptions

# Messages serialised between two yields to the event loop.
_PREPARE_SLICE = 8
# Results are handed to ``on_result`` in groups of this many as the server's replies arrive (the remainder
# comes back with the batch). A worker killed mid-batch then leaves in doubt at most about a group per batch
# plus one message per session, instead of everything its current chunk had sent; one record statement per
# group instead of per chunk is the price.
REPORT_EVERY = 50

_TLS_MODES = ("starttls", "ssl", "none", "auto")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# The message is CRLF throughout, so "\n." finds the lines to stuff; a regex scan is twice as fast here as
# `in` with a needle whose first bytes repeat on every line.
_LINE_STARTS_WITH_DOT = re.compile(rb"\n\.")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: str = "auto"
    verify: bool = True
    cafile: str | None = None
    timeout: float = 30.0
    helo: str | None = None
    pipelining: bool = True

    def tls_context(self) -> ssl.SSLContext | None:
        if self.tls == "none":
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def parse_smtp_url(url: str) -> SmtpConfig:
    """Parse ``smtp[s]://[user[:password]@]host[:port][?options]``; raise ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("needs a host, e.g. smtp://user:password@mail.example.com:587")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - {"tls", "verify", "cafile", "timeout", "helo", "pipelining"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    tls = options.get("tls", "").lower() or ("ssl" if parts.scheme == "smtps" or port == 465 else "auto")
    if tls not in _TLS_MODES:
        raise ValueError(f"tls must be one of {', '.join(_TLS_MODES)}, got {tls!r}")
    if port is None:
        port = 465 if tls == "ssl" else 587 if tls == "starttls" else 25
    try:
        timeout = float(options.get("timeout", "30"))
    except ValueError:
        raise ValueError("timeout must be a number of seconds") from None
    if not 0 < timeout <= 600:
        raise ValueError("timeout must be between 0 and 600 seconds")
    return SmtpConfig(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        verify=_flag("verify", options.get("verify", "true")),
        cafile=options.get("cafile") or None,
        timeout=timeout,
        helo=options.get("helo") or None,
        pipelining=_flag("pipelining", options.get("pipelining", "true")),
    )


class SmtpProvider:
    # Messages go one by one (no request carries several), so a chunk larger than the pipeline's usual 200
    # buys no fewer round trips and only holds more rendered messages in memory at once (measured: a flow's
    # slices of 500 kept a worker at 236 MB where 200 kept it at 186).
    max_batch_size = 200

    def __init__(
        self,
        config: SmtpConfig,
        *,
        pool_size: int = 5,
        signer: DkimSigner | None = None,
        keyring: DkimKeyring | None = None,
        builder: MimeBuilder | None = None,
        tls_context: ssl.SSLContext | None = None,
        idle_timeout: float = 50.0,
    ) -> None:
        self.config = config
        # The From domain's keys when its workspace verified it, else `signer` (EMAILKIT_DKIM_*).
        self._signing = MessageSigning(signer, keyring)
        self._builder = builder or MimeBuilder()
        # Built now so a missing or unreadable cafile surfaces at start-up, not at the first send.
        self._tls_context = tls_context or config.tls_context()
        self._idle_timeout = idle_timeout
        self._pool_size = pool_size
        self._pool: SmtpPool | None = None
        self._pool_lock = asyncio.Lock()
        self._senders: dict[str, bytes] = {}

    @property
    def connections_opened(self) -> int:
        return self._pool.connections_opened if self._pool is not None else 0

    async def _get_pool(self) -> SmtpPool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    helo = self.config.helo or await asyncio.to_thread(socket.getfqdn)
                    options = SessionOptions(
                        host=self.config.host,
                        port=self.config.port,
                        username=self.config.username,
                        password=self.config.password,
                        tls=self.config.tls,
                        tls_context=self._tls_context,
                        timeout=self.config.timeout,
                        local_hostname=helo,
                        pipelining=self.config.pipelining,
                        idle_timeout=self._idle_timeout,
                    )
                    self._pool = SmtpPool(options, self._pool_size)
        return self._pool

    def _sender(self, address: str) -> bytes:
        # One envelope sender per campaign: its conversion is worth caching. With VERP (a bounce domain) each
        # message has its own, and the cache costs a missed lookup (ascii_email of one is 0.7 µs).
        cached = self._senders.get(address)
        if cached is None:
            cached = ascii_email(address).encode("ascii") if address else b""
            if len(self._senders) > 64:
                self._senders.clear()
            self._senders[address] = cached
        return cached

    def _prepare(self, job: SmtpJob, signers: BatchSigners) -> SendResult | None:
        """Fill the job's payload and envelope; a message that cannot be expressed fails for good."""
        message = job.message
        try:
            sender = self._sender(message.sender)
            recipient = ascii_email(message.to.email).encode("ascii")
            mime = self._builder.build(message)
        except MimeError as exc:
            return SendResult.failed(message.delivery_id, str(exc), transient=False)
        data = signers.sign(message, mime.data)
        # DATA transparency (RFC 5321 4.5.2): a line starting with "." gets another one.
        if data.startswith(b"."):
            data = b"." + data
        if _LINE_STARTS_WITH_DOT.search(data):
            data = data.replace(b"\r\n.", b"\r\n..")
        job.payload = data
        job.message_id = mime.message_id
        job.envelope = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender, recipient)
        return None

    async def _prepare_all(self, messages: Sequence[OutgoingMessage], finisher: Finisher) -> deque[SmtpJob]:
        """The jobs ready to go, in order; a message that cannot be expressed is finished as failed here."""
        queue: deque[SmtpJob] = deque()
        signers = await self._signing.for_batch(messages)
        for index, message in enumerate(messages):
            job = SmtpJob(index, message)
            failure = self._prepare(job, signers)
            if failure is None:
                queue.append(job)
            else:
                finisher(job, failure)
            if index % _PREPARE_SLICE == _PREPARE_SLICE - 1:
                # Serialising a batch takes tens of ms of CPU: let other batches' sessions run meanwhile.
                await asyncio.sleep(0)
        return queue

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        if not messages:
            return []
        finisher = Finisher(len(messages), REPORT_EVERY if on_result is not None else 0)
        queue = await self._prepare_all(messages, finisher)
        senders = Senders(await self._get_pool(), queue, finisher)
        await senders.run(on_commit, on_result)
        # Whatever is left could not be attempted because no session could be opened.
        reason = senders.connect_errors[-1] if senders.connect_errors else "no SMTP session available"
        for job in queue:
            finisher(job, SendResult.failed(job.message.delivery_id, reason, transient=True))
        return finisher.results(messages)

    async def probe(self) -> ProbeResult:
        """Connect, greet, upgrade to TLS as configured, authenticate when credentials are set, and QUIT."""
        c = self.config
        helo = c.helo or await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.tls == "ssl",
            start_tls=None if c.tls == "auto" else c.tls == "starttls",
            tls_context=self._tls_context,
            timeout=c.timeout,
            local_hostname=helo,
        )
        try:
            reply = await client.connect()
            if client.is_ehlo_or_helo_needed:
                reply = await client.ehlo()
            if c.username:
                reply = await client.login(c.username, c.password or "")
            await client.quit()
        except aiosmtplib.SMTPResponseException as exc:
            return ProbeResult(False, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            return ProbeResult(False, f"cannot open an SMTP session with {c.host}:{c.port}: {exc}")
        finally:
            client.close()
        first_line = reply.message.splitlines()[0] if reply.message else ""
        return ProbeResult(True, f"{reply.code} {first_line}".strip())

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def from_sender(
    settings: Mapping[str, Any],
    credentials: Mapping[str, str],
    *,
    pool_size: int,
    keyring: DkimKeyring | None = None,
) -> SmtpProvider:
    """An SMTP sender: settings {url: "smtp://host:port?tls=..."}, credentials {username, password} (both or
    neither). The URL takes the options of ``EMAILKIT_SMTP_URL`` but no user or password: those are secrets."""
    refuse_unknown(settings, ("url",))
    refuse_unknown(credentials, ("username", "password"))
    url = required_text(settings, "url")
    try:
        config = parse_smtp_url(url)
    except ValueError as exc:
        raise SenderConfigError("url", str(exc)) from None
    if config.username or config.password:
        raise SenderConfigError("url", "must not carry a user or password (they go in credentials)")
    if config.cafile is not None:
        # An API key must not make the server read one of its files (nor block on a FIFO named as one).
        raise SenderConfigError(
            "url", "cafile is not allowed here; verify=false accepts a private CA's relay"
        )
    username = text(credentials, "username")
    password = text(credentials, "password")
    if password and not username:
        raise SenderConfigError("username", "required with a password")
    if username and not password:
        raise SenderConfigError("password", "required with a username")
    config = replace(config, username=username, password=password)
    try:
        return SmtpProvider(config, pool_size=pool_size, keyring=keyring)
    except (OSError, ssl.SSLError) as exc:
        raise SenderConfigError("url", f"cannot load the cafile: {exc}") from None
