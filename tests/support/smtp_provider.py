"""A real SMTP server (aiosmtpd) on a free port for the smtp provider's tests, and the messages they send.

aiosmtpd's Controller(port=0) fails its self-check, so servers are started with loop.create_server.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.providers.smtp import SmtpProvider, parse_smtp_url


@dataclass
class Sink:
    """aiosmtpd handler that records deliveries and misbehaves for chosen recipients."""

    pipelining: bool = True
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    drop_on_data: set[str] = field(default_factory=set)
    stall_on_data: set[str] = field(default_factory=set)
    delivered: list[tuple[str, str, bytes]] = field(default_factory=list)
    connections: int = 0
    protocols: list[SMTP] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt in self.drop_on_data:
            self.drop_on_data.discard(rcpt)
            assert server.transport is not None
            server.transport.abort()
            return "250 never sent"
        if rcpt in self.stall_on_data:
            await self.release.wait()
        if rcpt in self.data_replies:
            return self.data_replies[rcpt]
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.delivered.append((envelope.mail_from, rcpt, envelope.content))
        return "250 2.0.0 Ok: queued"

    def recipients(self) -> list[str]:
        return [rcpt for _, rcpt, _ in self.delivered]


@asynccontextmanager
async def smtp_server(
    sink: Sink, *, ssl_context: ssl.SSLContext | None = None, **kwargs: Any
) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        sink.connections += 1
        protocol = SMTP(sink, hostname="localhost", loop=loop, **kwargs)
        sink.protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        sink.release.set()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def provider_for(url: str, **kwargs: Any) -> AsyncIterator[SmtpProvider]:
    provider = SmtpProvider(parse_smtp_url(url), **kwargs)
    try:
        yield provider
    finally:
        await provider.close()


def message(i: int | str, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"d{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", f"User {i}"),
        "from_": Address("news@news.example.com", "Example News"),
        "subject": f"Issue {i}",
        "html": f"<p>Hello user {i}</p>",
        "text": f"Hello user {i}",
        "headers": {
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def parsed(raw: bytes) -> Any:
    return BytesParser(policy=default).parsebytes(raw)
