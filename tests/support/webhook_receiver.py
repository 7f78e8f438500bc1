"""A local HTTP receiver for outgoing webhooks: records every request and answers what the test says.

Raw asyncio (HTTP/1.1 keep-alive, Content-Length bodies), so the tests exercise the deliverer's own client
against a real socket; the bench uses the same server at a few thousand requests a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


# Given the request, the status to answer (and a body).
Responder = Callable[[Received], tuple[int, bytes]]


def always(status: int, body: bytes = b"") -> Responder:
    return lambda _: (status, body)


@dataclass
class Receiver:
    responder: Responder = field(default_factory=lambda: always(204))
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """The first `count` requests, once that many have arrived (a condition, not a sleep)."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    async def _record(self, request: Received) -> None:
        self.requests.append(request)
        async with self._changed:
            self._changed.notify_all()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(path, headers, body)
                status, answer = self.responder(request)
                await self._record(request)
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                    % (status, len(answer), answer)
                )
                await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def receiver(responder: Responder | None = None) -> AsyncIterator[Receiver]:
    box = Receiver(responder or always(204))
    server = await asyncio.start_server(box.handle, "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()
