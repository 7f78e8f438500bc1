"""A fixed set of SMTP sessions shared by a provider's concurrent senders (see ``smtp_session``)."""

from __future__ import annotations

import asyncio

from emailkit.providers.smtp_session import SessionOptions, SmtpSession


class SmtpPool:
    """A fixed number of sessions, handed out one per concurrent sender and reused across batches."""

    def __init__(self, options: SessionOptions, size: int) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.options = options
        self.size = size
        self.connections_opened = 0
        self._sessions = [SmtpSession(options, self._count_connection) for _ in range(size)]
        self._idle: asyncio.Queue[SmtpSession] = asyncio.Queue()
        for session in self._sessions:
            self._idle.put_nowait(session)

    def _count_connection(self) -> None:
        self.connections_opened += 1

    async def acquire(self) -> SmtpSession:
        return await self._idle.get()

    def release(self, session: SmtpSession) -> None:
        self._idle.put_nowait(session)

    def close(self) -> None:
        for session in self._sessions:
            session.close()
