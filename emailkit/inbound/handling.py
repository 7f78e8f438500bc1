"""One received message acted upon: the path shared by ``emailkit bounce-server`` and ``emailkit bounce-mailbox``.

What ties a message to a delivery, strongest first:

* one of our VERP addresses (signed, :mod:`emailkit.domain.verp`): the SMTP envelope's recipients for the bounce
  server; for mail read from a mailbox, where the envelope is gone, the headers the delivering MTA keeps it in
  (``Delivered-To``, ``X-Original-To``, ``Envelope-To``...) or the bounce's ``To``. A ``bounce+`` address makes
  the message a report about its delivery, an ``unsubscribe+`` address an unsubscribe of its recipient;
* without one, the ``X-Emailkit-Delivery`` header of the original message quoted in the report. Anybody who can
  write to the mailbox can write that header, so it is believed only together with the address the delivery
  went to: the report must name it. (A complaint report that redacts the address is then not used; a bounce
  domain, whose VERP address needs no such check, avoids that.)

Anything else (no report, no delivery, a report about somebody else) is ignored: the caller decides what
becomes of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.types import utcnow
from emailkit.domain.feedback import FeedbackPolicy, record_events
from emailkit.domain.feedback.hits import unsubscribe_delivery
from emailkit.domain.feedback.returned import delivery_address
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.domain.verp import ReturnPaths, VerpAddress, VerpKind
from emailkit.inbound.reports import events_from_message, read_report

log = logging.getLogger("emailkit.bounces")

# Where mail read from a mailbox keeps the address it was delivered to, most telling first. Return-Path is
# the bounce's own envelope sender (usually empty); it is read because some relays rewrite bounces to it.
ENVELOPE_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Delivered-To",
    "To",
    "Cc",
    "Return-Path",
)
# Our addresses in one message's headers: a DSN has one; more is a forgery or a loop.
_MAX_ADDRESSES = 100


@dataclass
class Outcome:
    """What one received message did (for logs, tests and the mailbox reader's sorting)."""

    # Events stored (a report received again stores none: see `reports`).
    recorded: int = 0
    unsubscribed: int = 0
    # Addresses (or, without one, messages) that led to nothing: no report, no such delivery.
    ignored: int = 0
    # Reports read about one of our deliveries, whether their events were new or already recorded.
    reports: int = 0

    @property
    def used(self) -> bool:
        return self.reports > 0 or self.unsubscribed > 0


@dataclass
class Receiver:
    """Records what received mail says, through the webhooks' path (:func:`record_events` and its policy)."""

    db: Database
    # None without a bounce domain: only the quoted delivery header ties a report to a delivery then.
    return_paths: ReturnPaths | None
    policy: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    live: CoalescingPublisher | None = None
    clock: Callable[[], datetime] = utcnow

    async def receive(self, raw: bytes, addresses: list[VerpAddress]) -> Outcome:
        """Act on one message for each of our addresses it was sent to."""
        outcome = Outcome()
        now = self.clock()
        for address in addresses:
            if address.kind is VerpKind.UNSUBSCRIBE:
                # The token is the credential: it acts in its delivery's workspace, whatever scope we run in.
                with all_workspaces():
                    done = await unsubscribe_delivery(self.db, address.delivery_id, live=self.live)
                if done is None:
                    outcome.ignored += 1
                else:
                    outcome.unsubscribed += 1
                continue
            recipient = await delivery_address(self.db, address.delivery_id)
            if recipient is None:
                outcome.ignored += 1
                continue
            await self._record(raw, now, address.delivery_id, recipient, outcome)
        return outcome

    async def receive_stored(self, raw: bytes) -> Outcome:
        """Act on a message read from a mailbox (no envelope): by the VERP addresses in its headers, else by
        the delivery its quoted original names."""
        addresses = self.addresses_in_headers(raw)
        if addresses:
            return await self.receive(raw, addresses)
        outcome = Outcome()
        report = await asyncio.to_thread(read_report, raw)
        ref = int(report.delivery_ref) if report.delivery_ref else None
        recipient = await delivery_address(self.db, ref) if ref else None
        if ref is None or recipient is None:
            outcome.ignored += 1
            return outcome
        if recipient.lower() not in {(f.recipient or "").lower() for f in report.findings}:
            log.info("delivery %s: the report quoting it is about another address; ignored", ref)
            outcome.ignored += 1
            return outcome
        await self._record(raw, self.clock(), ref, recipient, outcome)
        return outcome

    def addresses_in_headers(self, raw: bytes) -> list[VerpAddress]:
        """Our valid VERP addresses among the message's top-level delivery headers (never the quoted
        original's, which carry the unsubscribe address of the message that bounced)."""
        if self.return_paths is None:
            return []
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw, headersonly=True)
        values = [str(v) for name in ENVELOPE_HEADERS for v in headers.get_all(name, [])]
        found: list[VerpAddress] = []
        for _, address in getaddresses(values):
            verp = self.return_paths.read(address) if address else None
            if verp is not None and verp not in found:
                found.append(verp)
                if len(found) >= _MAX_ADDRESSES:
                    break
        return found

    async def _record(
        self, raw: bytes, now: datetime, delivery_id: int, recipient: str, outcome: Outcome
    ) -> None:
        # The email package is pure Python: a large report would hold up everything else on the loop.
        events = await asyncio.to_thread(
            events_from_message, raw, now, delivery_id=delivery_id, recipient=recipient
        )
        if not events:
            log.info("delivery %s: the message to its bounce address is no report", delivery_id)
            outcome.ignored += 1
            return
        summary = await record_events(self.db, events, policy=self.policy, live=self.live, now=now)
        outcome.recorded += summary.stored
        outcome.reports += 1
