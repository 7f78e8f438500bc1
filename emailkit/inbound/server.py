"""``emailkit bounce-server``: the SMTP receiver the bounce domain's MX points at.

It is not a mail server: it takes mail for exactly two kinds of address, both VERP addresses that we made and
signed (see :mod:`emailkit.domain.verp`), and refuses every other recipient at RCPT with 550 5.1.1, so it can
never relay or be used to store anything else.

* ``bounce+<token>@<bounce domain>``, the envelope sender of every message we send: a DSN (RFC 3464), an
  abuse report (RFC 5965) or a bounce in one of the older free-text formats is read (:mod:`.reports`) and its
  events recorded through the webhooks' path: the same normalised events, deduplicated, counted, suppressing
  after a hard bounce, a complaint or too many soft bounces, pausing a campaign past the complaint rate. The
  token names the delivery, and through it the workspace, whatever the report quotes; the address suppressed
  is the one the delivery went to.
* ``unsubscribe+<token>@<bounce domain>``, the ``mailto:`` of List-Unsubscribe: whatever the mail says, its
  delivery's recipient is unsubscribed as the one-click URL does it (from the lists that mail was sent
  through).

Mail to a valid address that is no report at all (an auto-reply, a person answering the bounce address,
spam) is accepted and dropped: refusing it after DATA would only make the sending server bounce it back to
a sender that is usually a null path, and nothing about it needs keeping. The same goes for a token whose
delivery no longer exists.

When recording fails (the database is away) the answer is 451, so the sending MTA retries; a retry of a
report already recorded stores nothing twice (each event's key derives from the report's Message-ID).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from emailkit.inbound.handling import Outcome, Receiver

log = logging.getLogger("emailkit.bounces")

# A DSN has one recipient per VERP envelope; an MTA batching reports for several of our deliveries in one
# transaction stays far below this.
MAX_RECIPIENTS = 100
# Idle SMTP sessions are dropped after this long (aiosmtpd's default is 5 minutes).
SESSION_TIMEOUT = 60.0


@dataclass
class BounceHandler(Receiver):
    """aiosmtpd handler: RCPT decides on the address alone (no database), DATA records (:class:`Receiver`)."""

    # Every message handled, for tests and logs; bounded so a busy server does not keep them.
    outcomes: list[Outcome] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.return_paths is None or self.return_paths.read(address) is None:
            log.info("refused RCPT %r from %s", address[:200], session.peer)
            return "550 5.1.1 No such recipient here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = (
                content if isinstance(content, bytes) else (content or "").encode("utf-8", "surrogateescape")
            )
        assert self.return_paths is not None  # RCPT accepted nothing without it
        addresses = [found for a in envelope.rcpt_tos if (found := self.return_paths.read(a)) is not None]
        try:
            outcome = await self.receive(raw, addresses)
        except Exception:
            log.exception("recording a message to %s failed; the sender will retry", envelope.rcpt_tos)
            return "451 4.3.0 Temporary failure, try again later"
        self.outcomes.append(outcome)
        del self.outcomes[:-1000]
        return "250 2.0.0 OK"


@dataclass(frozen=True)
class ServerOptions:
    hostname: str
    max_message_bytes: int
    tls_context: ssl.SSLContext | None = None


async def start_server(
    handler: BounceHandler, options: ServerOptions, host: str, port: int
) -> asyncio.Server:
    """Listen on ``host:port`` (0: a free port, see the returned server's sockets)."""
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        return SMTP(
            handler,
            hostname=options.hostname,
            data_size_limit=options.max_message_bytes,
            # Reports of mail with internationalised addresses come as SMTPUTF8 (RFC 6533).
            enable_SMTPUTF8=True,
            tls_context=options.tls_context,
            timeout=SESSION_TIMEOUT,
            ident="emailkit bounce-server",
            loop=loop,
        )

    return await loop.create_server(session, host, port)


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """STARTTLS for senders that want it (mailbox providers try it first)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
