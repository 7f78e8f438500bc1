"""The server's side of an SMTP session: its byte stream split into replies, reported in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_MAX_REPLY_BUFFER = 64 * 1024


class ReplyReader(asyncio.Protocol):
    """Splits the server's byte stream into replies (multi-line ones joined) and reports each in order.

    One reader per connection; :meth:`detach` silences it so a late callback from a closed connection
    never reaches the session's next one.
    """

    def __init__(self, on_reply: Callable[[int, bytes], None], on_lost: Callable[[str], None]) -> None:
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._partial = b""
        self._continued: list[bytes] = []

    def detach(self) -> None:
        self._on_reply = _ignore_reply
        self._on_lost = _ignore_lost

    def data_received(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self._partial = data[end:]
            if len(self._partial) > _MAX_REPLY_BUFFER:
                self._on_lost("the server sent an over-long reply line")
                return
        if not end:
            return
        on_reply = self._on_reply
        for line in data[: end - 1].split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line[3:4] == b"-":
                self._continued.append(line[4:])
                continue
            head = line[:3]
            text = line[4:]
            if self._continued:
                text = b"\n".join([*self._continued, text])
                self._continued = []
            on_reply(int(head) if head.isdigit() else 0, text)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(f"connection lost: {exc}" if exc else "the server closed the connection")


def _ignore_reply(code: int, text: bytes) -> None:
    return None


def _ignore_lost(reason: str) -> None:
    return None
