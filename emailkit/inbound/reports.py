"""A bounce or complaint mail, as raw bytes, turned into the events provider webhooks produce.

Three shapes, tried in this order:

* an RFC 3464 delivery status notification (``multipart/report; report-type=delivery-status``, or its RFC 6533
  ``global-delivery-status`` form): one finding per recipient block. ``Action: failed`` with a 5.x.x status is
  a hard bounce, with a 4.x.x status a soft one; ``Action: delayed`` is a DEFERRED event (the MTA is still
  trying and a ``failed`` report follows if it gives up; counting warnings as soft bounces would suppress people
  whose mail arrives in the end); ``delivered``, ``relayed`` and ``expanded`` say nothing to act on.
* an RFC 5965 abuse report (``multipart/report; report-type=feedback-report``): ``Feedback-Type`` abuse, fraud,
  virus or other is a COMPLAINT; not-spam and auth-failure are not about the recipient's wishes.
* anything else goes to flufl.bounce's detectors, which know the non-standard bounces old MTAs (qmail, Exim's
  older texts, Yahoo's, Microsoft's) still send. They report only addresses and permanent or temporary.

What ties a finding to our delivery: the VERP address the mail came to, when the caller has one (the bounce
server); else the ``X-Emailkit-Delivery`` header of the original message quoted in the report.

Auto-replies (vacation notices, RFC 3834) are neither: they are never handed to the heuristics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import parseaddr

from flufl.bounce import all_failures

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import DELIVERY_HEADER, META_DELIVERY, NormalizedEvent

#: The provider name of events read from mail (webhooks name theirs: ses, sendgrid, ...).
PROVIDER = "smtp"

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_FEEDBACK_TYPES = ("message/feedback-report",)
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers")
# Feedback types that mean "the recipient did not want this" (RFC 5965 section 7.3 registers the names).
_COMPLAINTS = frozenset({"abuse", "fraud", "virus", "other"})
_MAX_REASON = 500
_DAEMONS = ("mailer-daemon@", "postmaster@", "mail-daemon@", "mailerdaemon@")


@dataclass(frozen=True, slots=True)
class Finding:
    """One recipient's outcome as a report states it."""

    type: EventType
    recipient: str | None
    bounce_type: BounceType | None = None
    # The enhanced status code (RFC 3463), e.g. "5.1.1".
    status: str | None = None
    action: str | None = None
    diagnostic: str | None = None
    feedback_type: str | None = None

    @property
    def reason(self) -> str | None:
        parts = [p for p in (self.status, self.diagnostic, self.feedback_type) if p]
        return "; ".join(parts)[:_MAX_REASON] or None


@dataclass(frozen=True, slots=True)
class Report:
    """What a received message reports: ``kind`` is dsn, arf, heuristic or none (not a report we read)."""

    kind: str
    findings: list[Finding] = field(default_factory=list)
    # The report's own Message-ID, and our delivery id when the quoted original carries it.
    message_id: str | None = None
    delivery_ref: str | None = None


def read_report(raw: bytes) -> Report:
    """The findings of one received message (never raises for what the message contains)."""
    msg = message_from_bytes(raw, policy=compat32)
    message_id = _clean(msg.get("Message-ID"))
    delivery_ref = _quoted_delivery(msg)
    report_type = (msg.get_param("report-type", header="content-type") or "") if _is_report(msg) else ""
    report_type = str(report_type).lower()
    # A report without its machine-readable part (seen from Office 365) is read like any other text.
    status_parts = list(_parts(msg, _STATUS_TYPES))
    if status_parts:
        findings = [f for part in status_parts for f in _dsn_findings(part)]
        return Report("dsn", findings, message_id, delivery_ref)
    feedback_parts = list(_parts(msg, _FEEDBACK_TYPES))
    if report_type == "feedback-report" or feedback_parts:
        findings = [f for part in feedback_parts for f in _arf_findings(part, msg)]
        return Report("arf", findings, message_id, delivery_ref)
    findings = [] if _is_auto_reply(msg) else _heuristic_findings(msg)
    return Report("heuristic" if findings else "none", findings, message_id, delivery_ref)


def events_from_message(
    raw: bytes,
    received_at: datetime,
    *,
    delivery_id: int | None = None,
    recipient: str | None = None,
) -> list[NormalizedEvent]:
    """The feedback events of one received message, for the recorder (the webhooks' path).

    ``delivery_id`` and ``recipient``: what the caller knows for certain (a VERP address names the delivery, and
    the delivery the address it went to); they win over what the report says, which may be a forwarding
    address or the redacted ``To`` of a complaint. Without them, the report's recipient and the delivery id
    quoted in it are used, and findings without a recipient are dropped.
    """
    report = read_report(raw)
    findings = report.findings
    if recipient is not None:
        wanted = recipient.strip().lower()
        theirs = [f for f in findings if (f.recipient or "").lower() == wanted]
        # Heuristics read free text: only an address that is the recipient's confirms it is a bounce of it. A
        # report's own blocks about the recipient win over blocks about others (an alias that expanded).
        if theirs or report.kind == "heuristic":
            findings = theirs
    delivery = str(delivery_id) if delivery_id is not None else report.delivery_ref
    # One event per recipient and outcome: a report repeating a recipient (original and final) counts once.
    events: dict[tuple[str, EventType], NormalizedEvent] = {}
    identity = report.message_id or hashlib.sha256(raw).hexdigest()
    for finding in findings:
        email = recipient or finding.recipient
        if not email or (email, finding.type) in events:
            continue
        events[(email, finding.type)] = NormalizedEvent(
            type=finding.type,
            email=email,
            provider=PROVIDER,
            occurred_at=received_at,
            raw_event=f"{report.kind}:{finding.action or finding.feedback_type or finding.type.value.lower()}",
            provider_event_id=hashlib.sha256(f"{identity}\x1f{email}".encode()).hexdigest()[:40],
            bounce_type=finding.bounce_type,
            reason=finding.reason,
            metadata={META_DELIVERY: delivery} if delivery else {},
        )
    return list(events.values())


# -- DSN (RFC 3464) -----------------------------------------------------------------------------------------


def _dsn_findings(part: Message) -> Iterator[Finding]:
    blocks = _field_blocks(part)
    # The first block is about the message, the others each about one recipient.
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        finding = _dsn_finding(block)
        if finding is not None:
            yield finding


def _dsn_finding(block: Message) -> Finding | None:
    action = (block.get("Action") or "").strip().lower()
    status_match = _STATUS.search(block.get("Status") or "")
    diagnostic = _one_line(block.get("Diagnostic-Code"))
    status = status_match.group(0) if status_match else None
    code_class = status_match.group(1) if status_match else _class_of_diagnostic(diagnostic)
    recipient = _recipient(block.get("Original-Recipient")) or _recipient(block.get("Final-Recipient"))
    if not action and code_class in ("4", "5"):
        action = "failed"  # a block with an error status and no Action (seen from some MTAs)
    if action.startswith("delayed"):
        return Finding(EventType.DEFERRED, recipient, None, status, "delayed", diagnostic)
    # "error" is OpenSMTPD's non-standard spelling of "failed".
    if not action.startswith(("failed", "error")):
        return None
    bounce_type = BounceType.SOFT if code_class == "4" else BounceType.HARD
    return Finding(EventType.BOUNCE, recipient, bounce_type, status, "failed", diagnostic)


def _class_of_diagnostic(diagnostic: str | None) -> str | None:
    found = _SMTP_CODE.search(diagnostic or "")
    return found.group(1) if found else None


# -- ARF (RFC 5965) -----------------------------------------------------------------------------------------


def _arf_findings(part: Message, report: Message) -> Iterator[Finding]:
    for block in _field_blocks(part)[:1]:
        feedback_type = (block.get("Feedback-Type") or "").strip().lower()
        if feedback_type not in _COMPLAINTS:
            continue
        recipient = _recipient(block.get("Original-Rcpt-To")) or _original_to(report)
        yield Finding(EventType.COMPLAINT, recipient, feedback_type=feedback_type, action="complaint")


def _original_to(report: Message) -> str | None:
    original = _original(report)
    return _recipient(original.get("To")) if original is not None else None


# -- anything else ------------------------------------------------------------------------------------------


def _heuristic_findings(msg: Message) -> list[Finding]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        return []
    findings = [
        Finding(EventType.BOUNCE, a.decode("ascii").lower(), BounceType.HARD, action="failed")
        for a in sorted(permanent)
    ]
    findings += [
        Finding(EventType.DEFERRED, a.decode("ascii").lower(), action="delayed")
        for a in sorted(temporary - permanent)
    ]
    return findings


# -- MIME helpers -------------------------------------------------------------------------------------------


def _is_report(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report"


def _is_auto_reply(msg: Message) -> bool:
    """A vacation notice or another auto-responder's answer. Bounces say ``Auto-Submitted: auto-replied``
    too (Postfix does), so that alone counts only from someone other than a mailer daemon."""
    if any(msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond")):
        return True
    if (msg.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    auto = (msg.get("Auto-Submitted") or "").strip().lower()
    sender = (parseaddr(str(msg.get("From") or ""))[1] or "").lower()
    return auto.startswith("auto-replied") and not sender.startswith(_DAEMONS)


def _parts(msg: Message, types: tuple[str, ...]) -> Iterator[Message]:
    for part in msg.walk():
        if part.get_content_type() in types:
            yield part


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status or feedback-report part, however the parser left them: the
    email package splits message/delivery-status into blocks itself, parses other message/* types as one
    message, and leaves a part it could not read (or a base64-encoded one) as text."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        if len(blocks) == 1:
            # Parsed as one message (message/global-delivery-status, message/feedback-report): the first block
            # became its headers, and the blocks after it its body.
            first, rest = blocks[0], blocks[0].get_payload()
            more = _blocks_of(rest) if isinstance(rest, str) and rest.strip() else []
            return [first, *more] if first.keys() else more
        return blocks
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return _blocks_of(text)


def _blocks_of(text: str) -> list[Message]:
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(chunk.strip("\r\n") + "\n") for chunk in _BLANK_LINE.split(text) if chunk.strip()]


def _original(msg: Message) -> Message | None:
    """The original message (or its headers) a report quotes."""
    for part in _parts(msg, _ORIGINAL_TYPES):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        return HeaderParser(policy=compat32).parsestr(text)
    return None


def _quoted_delivery(msg: Message) -> str | None:
    original = _original(msg)
    value = original.get(DELIVERY_HEADER) if original is not None else None
    if value is None:
        return None
    cleaned = str(value).strip()
    return cleaned if cleaned.isascii() and cleaned.isdigit() and len(cleaned) <= 18 else None


def _recipient(value: object) -> str | None:
    """The address of a recipient field: ``rfc822; a@b`` (DSN), ``<a@b>`` (ARF) or an address header."""
    if value is None:
        return None
    text = _one_line(value) or ""
    kind, semi, rest = text.partition(";")
    if semi and " " not in kind.strip() and "@" not in kind:
        text = rest
    address = parseaddr(text.strip())[1].strip().lower()
    return address if "@" in address and " " not in address else None


def _one_line(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _clean(value: object) -> str | None:
    text = _one_line(value)
    return text[:255] if text else None
