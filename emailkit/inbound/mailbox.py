"""``emailkit bounce-mailbox``: bounces and complaint reports read from an IMAP mailbox.

For set-ups that cannot point an MX at ``emailkit bounce-server``: the bounce address (or the bounce domain's
catch-all) delivers into an ordinary mailbox, and this reader takes the reports out of it. Every message is
acted upon exactly as the bounce server acts on it (:class:`emailkit.inbound.handling.Receiver`), then moved
out of the folder read, so that the folder holds only what is still to do:

* reports about one of our deliveries (and ``unsubscribe+`` mails) go to the processed folder;
* everything else (auto-replies, people answering, spam, reports about deliveries we no longer have, messages
  over the size limit) goes to the "unhandled" folder, the processed folder unless configured otherwise. They
  are moved rather than left because they would otherwise be read again on every pass, and a person may
  want to read them.
* a message whose recording failed (the database is away) stays where it is and is read again next pass.

A crash between recording and moving reads the message again; its events carry keys derived from the report's
Message-ID, so the recorder stores nothing twice.

The reader waits for new mail with IDLE (RFC 2177) where the server offers it, and looks again at least every
poll interval anyway; without IDLE it polls. IMAPClient is a blocking library: every call runs in a thread,
one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imapclient import DELETED, IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from emailkit.inbound.handling import Receiver
from emailkit.inbound.mailbox_config import MailboxConfig, Security

log = logging.getLogger("emailkit.bounces.mailbox")

# Messages fetched per round trip.
_CHUNK = 25
# An IDLE is renewed well before the 30 minutes after which RFC 2177 lets a server drop it.
_MAX_IDLE_SECONDS = 25 * 60
# How soon a waiting reader notices it is asked to stop.
_STOP_CHECK_SECONDS = 0.5


class MailboxError(Exception):
    """The mailbox cannot be used as configured (login refused, folder missing): retrying will not help."""


@dataclass
class PassSummary:
    """One look through the folder."""

    processed: int = 0
    unhandled: int = 0
    # Events stored; a report read again stores none.
    recorded: int = 0
    # Messages left in the folder because acting on them failed.
    failed: int = 0


class Connection:
    """One logged-in IMAP session with the folder read selected (blocking: call it from a thread)."""

    def __init__(self, config: MailboxConfig, timeout: float) -> None:
        self.config = config
        context = _tls_context(config)
        self.client = IMAPClient(
            config.host,
            port=config.port,
            ssl=config.security is Security.TLS,
            ssl_context=context,
            timeout=timeout,
        )
        try:
            if config.security is Security.STARTTLS:
                self.client.starttls(context)
            try:
                self.client.login(config.username, config.password)
            except LoginError as exc:
                raise MailboxError(
                    f"{config.describe()}: the server refused the login of {config.username!r}: "
                    f"{_server_text(exc)}"
                ) from None
            for folder in {config.processed_folder, config.unhandled}:
                if not self.client.folder_exists(folder):
                    self.client.create_folder(folder)
            try:
                self.client.select_folder(config.folder)
            except IMAPClientError as exc:
                raise MailboxError(
                    f"{config.describe()}: cannot open the folder {config.folder!r}: {_server_text(exc)}"
                ) from None
            self.can_move = bool(self.client.has_capability("MOVE"))
            self.can_idle = bool(self.client.has_capability("IDLE"))
        except BaseException:
            self.close()
            raise

    def pending(self) -> list[int]:
        return sorted(self.client.search(["UNDELETED"]))

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        data = self.client.fetch(uids, ["RFC822.SIZE"])
        return {uid: int(item[b"RFC822.SIZE"]) for uid, item in data.items()}

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        # PEEK: a message that stays (its recording failed) stays unread for a person looking at the box.
        data = self.client.fetch(uids, ["BODY.PEEK[]"])
        return {uid: bytes(item[b"BODY[]"]) for uid, item in data.items() if b"BODY[]" in item}

    def move(self, uids: Sequence[int], folder: str) -> None:
        if uids:
            move_messages(self.client, uids, folder, can_move=self.can_move)

    def wait_for_mail(self, seconds: float, stop: threading.Event, on_idle: Callable[[], object]) -> bool:
        """IDLE until the folder has new mail (True), ``seconds`` passed or ``stop`` is set (False)."""
        self.client.idle()
        try:
            on_idle()
            deadline = time.monotonic() + min(seconds, _MAX_IDLE_SECONDS)
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                for response in self.client.idle_check(timeout=min(left, _STOP_CHECK_SECONDS)):
                    if len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
                        return True
            return False
        finally:
            self.client.idle_done()

    def close(self) -> None:
        try:
            self.client.logout()
        except (OSError, IMAPClientError):
            self.client.shutdown()


def try_login(config: MailboxConfig, timeout: float) -> str:
    """Log in and open the folder read-only, changing nothing (blocking); what the server said, or raises
    :class:`MailboxError` (refused), OSError or IMAPClientError (unreachable)."""
    context = _tls_context(config)
    client = IMAPClient(
        config.host,
        port=config.port,
        ssl=config.security is Security.TLS,
        ssl_context=context,
        timeout=timeout,
    )
    try:
        if config.security is Security.STARTTLS:
            client.starttls(context)
        try:
            said = client.login(config.username, config.password)
        except LoginError as exc:
            raise MailboxError(
                f"{config.describe()}: the server refused the login of {config.username!r}: {_server_text(exc)}"
            ) from None
        try:
            selected = client.select_folder(config.folder, readonly=True)
        except IMAPClientError as exc:
            raise MailboxError(
                f"{config.describe()}: cannot open the folder {config.folder!r}: {_server_text(exc)}"
            ) from None
        waiting = int(selected.get(b"EXISTS", 0))
        answer = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        return f"{config.describe()}: {' '.join(answer.split())[:200]}; {waiting} messages waiting"
    finally:
        try:
            client.logout()
        except (OSError, IMAPClientError):
            client.shutdown()


def move_messages(client: IMAPClient, uids: Sequence[int], folder: str, *, can_move: bool) -> None:
    """MOVE (RFC 6851) where the server has it, else COPY, flag \\Deleted and expunge: by UID where the server
    has UIDPLUS, else the whole folder's deleted messages (which a mailbox kept for this reader alone holds no
    others of)."""
    if can_move:
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [DELETED], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()


@dataclass
class MailboxReader:
    config: MailboxConfig
    receiver: Receiver
    # Seconds between looks without IDLE, and the longest an IDLE lasts before the folder is looked at again.
    poll_seconds: float = 60.0
    idle: bool = True
    max_message_bytes: int = 10 * 1024 * 1024
    # Socket timeout of every IMAP command.
    timeout: float = 60.0
    # Set while the reader waits for new mail (IDLE started or polling pause begun): for tests and status.
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    # Receives the summary of every pass of `run` when set (tests wait on it).
    passes: asyncio.Queue[PassSummary] | None = None

    async def connect(self) -> Connection:
        return await asyncio.to_thread(Connection, self.config, self.timeout)

    async def run_once(self) -> PassSummary:
        """Connect, handle every message in the folder, disconnect."""
        connection = await self.connect()
        try:
            return await self.read_folder(connection)
        finally:
            await asyncio.to_thread(connection.close)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the folder until ``stop`` is set, reconnecting after network errors (waiting longer each time,
        up to the poll interval). Raises :class:`MailboxError` when the mailbox refuses us."""
        flag = threading.Event()
        relay = asyncio.create_task(_relay(stop, flag))
        backoff = 1.0
        try:
            while not stop.is_set():
                try:
                    connection = await self.connect()
                except (OSError, IMAPClientError) as exc:
                    log.warning(
                        "cannot reach %s (%s); trying again in %.0fs", self.config.describe(), exc, backoff
                    )
                    await _pause(stop, backoff)
                    backoff = min(backoff * 2, max(self.poll_seconds, 1.0))
                    continue
                backoff = 1.0
                log.info(
                    "reading %s (%s)",
                    self.config.describe(),
                    "IDLE" if self._idles(connection) else "polling",
                )
                try:
                    await self._serve(connection, stop, flag)
                except (OSError, IMAPClientError) as exc:
                    log.warning("lost %s (%s); reconnecting", self.config.describe(), exc)
                finally:
                    await asyncio.to_thread(connection.close)
        finally:
            # Cancelled rather than stopped: a thread still waiting in IDLE must not keep the process alive.
            flag.set()
            relay.cancel()

    async def _serve(self, connection: Connection, stop: asyncio.Event, flag: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            summary = await self.read_folder(connection)
            if self.passes is not None:
                self.passes.put_nowait(summary)
            if summary.processed or summary.unhandled or summary.failed:
                log.info(
                    "%s: %d processed (%d events recorded), %d unhandled, %d left to retry",
                    self.config.describe(),
                    summary.processed,
                    summary.recorded,
                    summary.unhandled,
                    summary.failed,
                )
            try:
                if self._idles(connection):
                    await asyncio.to_thread(
                        connection.wait_for_mail,
                        self.poll_seconds,
                        flag,
                        lambda: loop.call_soon_threadsafe(self.waiting.set),
                    )
                else:
                    self.waiting.set()
                    await _pause(stop, self.poll_seconds)
                    # A NOOP lets the server tell about new mail and keeps the session from timing out.
                    await asyncio.to_thread(connection.client.noop)
            finally:
                self.waiting.clear()

    def _idles(self, connection: Connection) -> bool:
        return self.idle and connection.can_idle

    async def read_folder(self, connection: Connection) -> PassSummary:
        summary = PassSummary()
        uids = await asyncio.to_thread(connection.pending)
        for start in range(0, len(uids), _CHUNK):
            chunk = uids[start : start + _CHUNK]
            sizes = await asyncio.to_thread(connection.sizes, chunk)
            small = [u for u in chunk if sizes.get(u, 0) <= self.max_message_bytes]
            bodies = await asyncio.to_thread(connection.bodies, small)
            processed: list[int] = []
            unhandled = [u for u in chunk if u not in bodies and u in sizes]
            try:
                for uid in chunk:
                    raw = bodies.get(uid)
                    if raw is None:
                        continue
                    try:
                        outcome = await self.receiver.receive_stored(raw)
                    except Exception:
                        log.exception(
                            "%s: acting on message %d failed; it stays", self.config.describe(), uid
                        )
                        summary.failed += len(uids) - start - chunk.index(uid)
                        return summary
                    (processed if outcome.used else unhandled).append(uid)
                    summary.recorded += outcome.recorded
            finally:
                # What was acted upon leaves the folder even when a later message failed.
                await asyncio.to_thread(connection.move, processed, self.config.processed_folder)
                await asyncio.to_thread(connection.move, unhandled, self.config.unhandled)
                summary.processed += len(processed)
                summary.unhandled += len(unhandled)
        return summary


async def _relay(stop: asyncio.Event, flag: threading.Event) -> None:
    await stop.wait()
    flag.set()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def _tls_context(config: MailboxConfig) -> ssl.SSLContext | None:
    if config.security is Security.NONE:
        return None
    context = ssl.create_default_context(cafile=config.cafile)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _server_text(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text[:300] or type(exc).__name__
