"""The bounce server on a free port, and the reports a receiving MTA would send to it.

The reports are built the way RFC 3464 and RFC 5965 lay them out (a human part, the machine-readable part, the
original message's headers); each call gets its own Message-ID, as two real reports would.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from emailkit.db.engine import Database
from emailkit.db.scope import no_scope
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths
from emailkit.inbound.server import BounceHandler, ServerOptions, start_server
from tests.support.environment import TEST_SECRET

BOUNCE_DOMAIN = "bounces.example.com"
_serial = itertools.count(1)


def return_paths() -> ReturnPaths:
    return ReturnPaths(TokenSigner(TEST_SECRET), BOUNCE_DOMAIN)


@dataclass
class RunningServer:
    handler: BounceHandler
    port: int

    async def send(
        self, rcpt: str | list[str], raw: bytes, *, mail_from: str = "", **client: Any
    ) -> dict[str, aiosmtplib.SMTPResponse]:
        """One SMTP transaction, from the null sender as bounces come; the refused recipients when some were
        accepted (raises aiosmtplib's errors when none was, or DATA was refused). `client`: aiosmtplib.SMTP's
        options (start_tls, cert_bundle...)."""
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=30, **client) as client:
            errors, _ = await client.sendmail(mail_from, rcpt, raw)
        return errors


@asynccontextmanager
async def bounce_server(
    db: Database, *, max_message_bytes: int = 1024 * 1024, tls: ssl.SSLContext | None = None, **handler: Any
) -> AsyncIterator[RunningServer]:
    built = BounceHandler(db, return_paths(), **handler)
    options = ServerOptions(hostname=BOUNCE_DOMAIN, max_message_bytes=max_message_bytes, tls_context=tls)
    # Outside the tests' workspace scope, as `emailkit bounce-server` runs: its sessions inherit this context.
    with no_scope():
        server = await start_server(built, options, "127.0.0.1", 0)
    try:
        yield RunningServer(built, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def dsn(
    recipient: str,
    *,
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    original_headers: str = "",
) -> bytes:
    n = next(_serial)
    return (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        f"To: <{BOUNCE_DOMAIN}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{n}@mx.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-boundary"\r\n'
        "\r\n"
        "--dsn-boundary\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "Your message could not be delivered to one or more recipients.\r\n\r\n"
        "--dsn-boundary\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        "Arrival-Date: Mon, 7 Dec 2026 11:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: {diagnostic.format(rcpt=recipient)}\r\n\r\n"
        "--dsn-boundary\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"From: News <news@example.org>\r\nTo: {recipient}\r\nSubject: Hello\r\n{original_headers}\r\n"
        "--dsn-boundary--\r\n"
    ).encode()


def arf(recipient: str, *, feedback_type: str = "abuse") -> bytes:
    n = next(_serial)
    return (
        "From: <feedbackloop@isp.example>\r\n"
        "To: <fbl@example.org>\r\n"
        "Subject: FW: Hello\r\n"
        f"Message-ID: <arf-{n}@isp.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf-boundary"\r\n'
        "\r\n"
        "--arf-boundary\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is an email abuse report.\r\n\r\n"
        "--arf-boundary\r\n"
        "Content-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\n"
        "User-Agent: ExampleFBL/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\n\r\n"
        "--arf-boundary\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        f"From: News <news@example.org>\r\nTo: {recipient}\r\nSubject: Hello\r\n\r\nHello\r\n"
        "--arf-boundary--\r\n"
    ).encode()


def plain_mail(subject: str = "Re: Hello") -> bytes:
    n = next(_serial)
    return (
        "From: Kim <kim@example.net>\r\n"
        f"To: someone@{BOUNCE_DOMAIN}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <plain-{n}@example.net>\r\n\r\n"
        "Thanks, but please call me instead.\r\n"
    ).encode()
