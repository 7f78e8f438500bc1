"""What the fake provider APIs share: the record of what they accepted, concurrency counters, the hand-over
log, and the recipients that make them answer with an error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from tests.support.handover import HandoverLog
from tests.support.live_server import live_server

# Recipients (local part before "@") that make a fake answer the whole request with an error.
RATE_LIMITED = "limited"
BROKEN = "broken"
# A domain the fakes refuse as an invalid address (RFC 2606 reserves .invalid).
INVALID_DOMAIN = ".invalid"


@dataclass
class Accepted:
    """One message a fake took, in the provider's own terms and normalised for assertions."""

    provider_id: str
    to: str
    sender: str
    subject: str
    headers: dict[str, str]
    html: str | None
    text: str | None
    #: The message as the provider received it (a JSON object, or the form fields).
    raw: Any


@dataclass
class ApiState:
    key: str
    accepted: list[Accepted] = field(default_factory=list)
    #: Each valid request's body as it came (JSON, or the form fields), before any per-recipient expansion.
    received: list[Any] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # Seconds each request takes to answer, so concurrent requests overlap as against the real API.
    delay: float = 0.005
    handover: HandoverLog | None = None

    def accept(self, item: Accepted) -> None:
        self.accepted.append(item)

    def by_recipient(self, email: str) -> Accepted:
        return next(a for a in self.accepted if a.to == email)


def new_id() -> str:
    return str(uuid.uuid4())


def address_of(value: str) -> str:
    return parseaddr(value)[1].lower()


def valid_address(value: str) -> bool:
    email = address_of(value)
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and not domain.endswith(INVALID_DOMAIN))


def trouble(recipients: list[str]) -> str | None:
    """RATE_LIMITED or BROKEN when one of the recipients asks for it."""
    for email in recipients:
        local = email.partition("@")[0]
        if local in (RATE_LIMITED, BROKEN):
            return local
    return None


def counted(
    state: ApiState, handler: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """Counts concurrent requests and makes each take ``state.delay``."""

    async def wrapped(request: Request) -> Response:
        state.in_flight += 1
        state.requests += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.delay)
            return await handler(request)
        finally:
            state.in_flight -= 1

    return wrapped


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    async with live_server(app) as host:
        yield f"http://{host}"
