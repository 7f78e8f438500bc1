"""Every bounce mailbox ``emailkit bounce-mailbox`` reads: EMAILKIT_BOUNCE_MAILBOX_URL's and each sender's.

One :class:`~emailkit.inbound.mailbox.MailboxReader` per mailbox, all at once on one event loop and sharing one
Receiver (so one database pool). Senders change while the command runs: their rows are read again every
``refresh_seconds``, and a reader is started for a new mailbox, stopped for one that went, and restarted when
its configuration changed (a new password, another folder). A mailbox that refuses us stops only its own reader,
with an error in the log; it is tried again at the next refresh, since the fix (a new password) is made
elsewhere.

Senders' credentials are unsealed into memory here and nowhere else; log lines name a mailbox by its URL
without the password (``MailboxConfig.describe``) and its sender by id and name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from imapclient.exceptions import IMAPClientError
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.senders import Sender
from emailkit.domain.ports.provider import SenderConfigError
from emailkit.domain.ports.senders import MAILBOX_SETTING
from emailkit.domain.sealing import SecretUnreadable
from emailkit.domain.senders.store import credentials_of
from emailkit.inbound.mailbox import MailboxError, MailboxReader, PassSummary
from emailkit.inbound.mailbox_config import MailboxConfig

log = logging.getLogger("emailkit.bounces.mailbox")

ENV_KEY = "env"
# How long a reader being replaced may take to leave its IDLE before it is cancelled.
_STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class MailboxSource:
    """A mailbox and whose it is: ``key`` is stable across refreshes ("env", "sender:<id>")."""

    key: str
    label: str
    config: MailboxConfig


async def senders_mailboxes(db: Database, instance_secret: str) -> dict[str, MailboxSource]:
    """The bounce mailboxes of every workspace's senders. A sender whose mailbox cannot be used as stored
    (credentials sealed under another key, settings from before a check) is left out, saying why."""
    with all_workspaces():
        async with db.session() as session:
            rows = (await session.execute(select(Sender).order_by(Sender.id))).scalars().all()
    found: dict[str, MailboxSource] = {}
    for row in rows:
        settings = row.settings or {}
        if MAILBOX_SETTING not in settings:
            continue
        label = f"sender {row.id} ({row.name})"
        try:
            config = MailboxConfig.from_sender(settings, credentials_of(row, instance_secret))
        except SecretUnreadable:
            log.error("%s: its credentials cannot be read (EMAILKIT_SECRET_KEY changed); not read", label)
            continue
        except SenderConfigError as exc:
            log.error("%s: its bounce mailbox is not usable (%s); not read", label, exc)
            continue
        if config is not None:
            found[f"sender:{row.id}"] = MailboxSource(f"sender:{row.id}", label, config)
    return found


@dataclass
class _Running:
    source: MailboxSource
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class MailboxFleet:
    """Readers for `fixed` mailboxes and those `load` returns, kept in step with `load` while running."""

    make_reader: Callable[[MailboxConfig], MailboxReader]
    load: Callable[[], Awaitable[Mapping[str, MailboxSource]]]
    fixed: Mapping[str, MailboxSource] = field(default_factory=dict)
    refresh_seconds: float = 60.0
    running: dict[str, _Running] = field(default_factory=dict)
    # Set after each refresh (tests wait on it).
    refreshed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.refresh()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.refresh_seconds)
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(*(self._stop(key) for key in list(self.running)))

    async def refresh(self) -> None:
        try:
            wanted = {**self.fixed, **await self.load()}
        except Exception:
            # The database is away: the readers running go on with what they had.
            log.exception(
                "cannot read the senders' bounce mailboxes; trying again in %.0fs", self.refresh_seconds
            )
            self.refreshed.set()
            return
        for key, running in list(self.running.items()):
            source = wanted.get(key)
            # A reader that ended (its mailbox refused us) is started again: it may have been fixed since.
            if source is None or source.config != running.source.config or running.task.done():
                await self._stop(key)
        for key, source in wanted.items():
            if key not in self.running:
                self._start(source)
        self.refreshed.set()

    def _start(self, source: MailboxSource) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._read(source, stop), name=f"mailbox {source.key}")
        self.running[source.key] = _Running(source, stop, task)

    async def _read(self, source: MailboxSource, stop: asyncio.Event) -> None:
        log.info(
            "%s: reading %s, handled mail to %r, the rest to %r",
            source.label,
            source.config.describe(),
            source.config.processed_folder,
            source.config.unhandled,
        )
        try:
            await self.make_reader(source.config).run(stop)
        except MailboxError as exc:
            log.error("%s: %s; tried again at the next refresh", source.label, exc)
        except Exception:
            # One mailbox's failure must not end the others' readers.
            log.exception("%s: the reader stopped; started again at the next refresh", source.label)

    async def _stop(self, key: str) -> None:
        running = self.running.pop(key)
        running.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=_STOP_GRACE_SECONDS)
        except TimeoutError:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)


async def read_once(
    make_reader: Callable[[MailboxConfig], MailboxReader], sources: Mapping[str, MailboxSource]
) -> dict[str, PassSummary | str]:
    """Each mailbox's folder handled once, all at once: its summary, or why it could not be read."""

    async def one(source: MailboxSource) -> PassSummary | str:
        try:
            return await make_reader(source.config).run_once()
        except MailboxError as exc:
            return str(exc)
        except (OSError, IMAPClientError) as exc:
            return f"{source.config.describe()}: {exc}"

    keys = list(sources)
    results = await asyncio.gather(*(one(sources[key]) for key in keys))
    return dict(zip(keys, results, strict=True))
