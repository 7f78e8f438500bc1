"""An SMTP peer (aiosmtpd) that records, as JSON lines in a file, every RCPT it is given and every message it
accepts: who sent it (the client's address), to whom, which delivery it carries (the X-Emailkit-Delivery
header) and when. It runs as a program of its own, so a test can start it on another host (a network namespace):

    python -m tests.support.smtp_recorder HOST PORT FILE

It prints "ready" once it listens. A message counts as delivered when its line with "event": "data" is in the
file: that line is written (and flushed) before the 250 reply to the final ".", which is when SMTP hands the
message over.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from emailkit.domain.ports.provider import DELIVERY_HEADER


@dataclass(frozen=True)
class Accepted:
    """One accepted message."""

    client: str
    recipients: tuple[str, ...]
    delivery_id: int | None
    at: float


def _client(session: Session) -> str:
    """The client's address (aiosmtpd gives the socket's peer name, typed loosely)."""
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class _Recorder:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def _write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self._write({"event": "rcpt", "client": _client(session), "rcpt": address, "at": time.time()})
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header = BytesHeaderParser().parsebytes(content).get(DELIVERY_HEADER)
        self._write(
            {
                "event": "data",
                "client": _client(session),
                "rcpts": list(envelope.rcpt_tos),
                "delivery": int(header) if header and header.isdigit() else None,
                "at": time.time(),
            }
        )
        return "250 Message accepted"


def read(path: Path) -> tuple[list[Accepted], list[dict[str, Any]]]:
    """The accepted messages and the RCPT lines recorded so far (a line being written is left for later)."""
    accepted: list[Accepted] = []
    rcpts: list[dict[str, Any]] = []
    if not path.exists():
        return accepted, rcpts
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["event"] == "data":
            accepted.append(
                Accepted(record["client"], tuple(record["rcpts"]), record["delivery"], record["at"])
            )
        else:
            rcpts.append(record)
    return accepted, rcpts


async def serve(host: str, port: int, path: Path) -> None:
    with path.open("a") as out:
        recorder = _Recorder(out)
        loop = asyncio.get_running_loop()
        # Not aiosmtpd's Controller: its self-check fails in some set-ups; a plain server is enough here.
        server = await loop.create_server(
            lambda: SMTP(recorder, hostname="peer.multihost.test", decode_data=False), host, port
        )
        print("ready", flush=True)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
