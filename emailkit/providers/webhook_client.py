"""The HTTP client that delivers outgoing webhooks: HTTP/1.1 POSTs over reused keep-alive connections, each new
connection made to an address checked by the SSRF rule.

Why not httpx: on this project's 2-core machine kind a POST through httpx costs 600-900 µs of CPU (its connection
pool rescans every connection and waiter per request, and each lock looks for sniffio), against ≈ 35 µs for the
same request written on an asyncio stream (BENCHMARKS.md, "Outgoing webhooks"). A webhook POST needs little of
HTTP: one request line, a few headers, a JSON body, and of the answer its status and a short excerpt of the
body, which this module reads in full (Content-Length, chunked, or to the end) so the connection can be reused.

A new connection resolves the host itself, checks every answer (``destinations.connectable``: one refused answer
refuses the name, so a DNS answer that turned private fails that attempt), and connects to a checked address;
the name stays the Host header and, over TLS, the server name (SNI) the certificate is verified against.
Redirects are not followed: a 3xx is a failed attempt, like any status but 2xx.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from emailkit.domain.webhooks_out import destinations
from emailkit.domain.webhooks_out.delivery import Answer
from emailkit.domain.webhooks_out.destinations import DestinationRefused, Target

USER_AGENT: Final = "emailkit-webhooks/1"
# The longest status line and headers accepted (StreamReader limit).
MAX_HEAD: Final = 64 * 1024
# A body longer than this is not read: the connection is closed instead.
MAX_BODY: Final = 1024 * 1024
EXCERPT: Final = 1024
# Servers commonly drop idle connections after 5 s (Node.js) to 60 s; reuse only fresher ones.
IDLE_SECONDS: Final = 4.0
MAX_IDLE_PER_HOST: Final = 128


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as this client reads it."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing() and not self.reader.at_eof() and now - self.idle_since < IDLE_SECONDS
        )

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    keep_alive: bool
    excerpt: bytes


def _headers(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed header line")
        name = name.strip().lower()
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return version, int(code), fields


def _keeps_alive(version: str, fields: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in fields.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """(excerpt, whole body read) of a chunked body."""
    excerpt = bytearray()
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("malformed chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return bytes(excerpt), True
        total += size
        if total > MAX_BODY:
            return bytes(excerpt), False
        chunk = await reader.readexactly(size + 2)
        if len(excerpt) < EXCERPT:
            excerpt += chunk[: min(size, EXCERPT - len(excerpt))]


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    excerpt = bytearray()
    total = 0
    while total < MAX_BODY:
        data = await reader.read(65536)
        if not data:
            break
        total += len(data)
        if len(excerpt) < EXCERPT:
            excerpt += data[: EXCERPT - len(excerpt)]
    return bytes(excerpt)


async def read_response(reader: asyncio.StreamReader) -> _Response:
    """One answer (informational 1xx answers skipped), its body read so the connection can serve the next."""
    while True:
        version, status, fields = _headers(await reader.readuntil(b"\r\n\r\n"))
        if status >= 200:
            break
        if status == 101:
            raise ProtocolError("the server switched protocols")
    keep = _keeps_alive(version, fields)
    if status in (204, 304):
        return _Response(status, keep, b"")
    if "chunked" in fields.get("transfer-encoding", "").lower():
        excerpt, whole = await _read_chunked(reader)
        return _Response(status, keep and whole, excerpt)
    if "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise ProtocolError("malformed Content-Length") from None
        if length > MAX_BODY:
            return _Response(status, False, b"")
        body = await reader.readexactly(length) if length else b""
        return _Response(status, keep, body[:EXCERPT])
    return _Response(status, False, await _read_to_end(reader))


def request_bytes(target: Target, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    head = [
        f"POST {target.target} HTTP/1.1",
        f"Host: {target.host_header}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed before a complete answer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, DestinationRefused | ProtocolError) else f"{type(exc).__name__}: {text}"


@dataclass
class GuardedHttpClient:
    """The WebhookPoster of worker processes (see module docstring). One per event loop."""

    allow_private: bool = False
    connect_timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    _idle: dict[tuple[str, str, int], list[_Connection]] = field(default_factory=dict)

    async def post(
        self, target: Target, body: bytes, headers: Sequence[tuple[str, str]], *, time_limit: float
    ) -> Answer:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(time_limit):
                answer = await self._exchange(target, request_bytes(target, body, headers))
        except TimeoutError:
            return Answer(None, _ms(started), f"no answer within {time_limit:g} s")
        except (OSError, EOFError, ProtocolError, DestinationRefused, ValueError) as exc:
            return Answer(None, _ms(started), _describe(exc))
        return Answer(answer.status, _ms(started), body_excerpt=answer.excerpt.decode("utf-8", "replace"))

    async def _exchange(self, target: Target, request: bytes) -> _Response:
        key = (target.scheme, target.host, target.port)
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._send(key, conn, request)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # The server dropped the idle connection as we reused it: once more on a new one, unless it
                # had begun to answer (then the request reached it, and the attempt is simply failed).
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
        return await self._send(key, await self._connect(target), request)

    async def _send(self, key: tuple[str, str, int], conn: _Connection, request: bytes) -> _Response:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            response = await read_response(conn.reader)
        except BaseException:
            conn.close()
            raise
        if response.keep_alive:
            self._give_back(key, conn)
        else:
            conn.close()
        return response

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    def _give_back(self, key: tuple[str, str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, target: Target) -> _Connection:
        addresses = await destinations.connectable(target.host, target.port, allow_private=self.allow_private)
        tls = self._tls() if target.tls else None
        error: OSError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        str(address),
                        target.port,
                        ssl=tls,
                        server_hostname=target.host if tls is not None else None,
                        limit=MAX_HEAD,
                    )
                return _Connection(reader, writer)
            except TimeoutError:
                # Not a TimeoutError: the caller reports those as the whole attempt's time running out.
                error = OSError(f"could not connect to {address} within {self.connect_timeout:g} s")
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        for conns in idle.values():
            for conn in conns:
                try:
                    await conn.writer.wait_closed()
                except (OSError, ssl.SSLError):
                    pass


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
