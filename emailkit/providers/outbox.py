"""``outbox``: every message becomes ``<outbox_dir>/<delivery id>.eml`` (the embedded default).

Each file is written under a temporary name and renamed into place, so a reader (or a crash) never sees a
half-written message; re-sending a delivery replaces its file rather than adding a second one.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from emailkit.domain.ports.dkim import DkimKeyring
from emailkit.domain.ports.provider import (
    CommitHook,
    OutgoingMessage,
    ProbeResult,
    ResultHook,
    SenderConfigError,
    SendResult,
)
from emailkit.providers.dkim import DkimSigner
from emailkit.providers.dkim_keys import MessageSigning
from emailkit.providers.mime import MimeBuilder, MimeError
from emailkit.providers.sender_config import refuse_unknown, text

# An envelope address as it may stand in a header line: nothing that could end the line or the brackets.
_ENVELOPE_ADDRESS = re.compile(r"[^\s<>]+@[^\s<>]+")


class OutboxProvider:
    # Messages go one by one (no request carries several), so a chunk larger than the pipeline's usual 200
    # buys no fewer round trips and only holds more rendered messages in memory at once (measured: a flow's
    # slices of 500 kept a worker at 236 MB where 200 kept it at 186).
    max_batch_size = 200

    def __init__(
        self,
        directory: Path,
        *,
        signer: DkimSigner | None = None,
        keyring: DkimKeyring | None = None,
        builder: MimeBuilder | None = None,
    ) -> None:
        self.directory = Path(directory)
        # The From domain's keys when its workspace verified it, else `signer` (EMAILKIT_DKIM_*).
        self._signing = MessageSigning(signer, keyring)
        self._builder = builder or MimeBuilder()

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        rendered: list[tuple[OutgoingMessage, bytes | None, str]] = []
        signers = await self._signing.for_batch(messages)
        for message in messages:
            try:
                mime = self._builder.build(message)
            except MimeError as exc:
                rendered.append((message, None, str(exc)))
                continue
            data = signers.sign(message, mime.data)
            if message.sender != message.from_.email and _ENVELOPE_ADDRESS.fullmatch(message.sender):
                # What the final MTA would add from the envelope (RFC 5321 4.4), outside the DKIM signature as
                # there: with a bounce domain this is the VERP address that bounces come back to.
                data = b"Return-Path: <%s>\r\n" % message.sender.encode("utf-8") + data
            rendered.append((message, data, mime.message_id))
        committed = [m.delivery_id for m, data, _ in rendered if data is not None]
        if committed and on_commit is not None:
            await on_commit(committed)
        # One hop to a thread per batch keeps file I/O off the event loop without a hop per message.
        return await asyncio.to_thread(self._write_all, rendered)

    def _write_all(self, rendered: list[tuple[OutgoingMessage, bytes | None, str]]) -> list[SendResult]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [
                SendResult.failed(m.delivery_id, f"outbox unavailable: {exc}", transient=True)
                for m, _, _ in rendered
            ]
        results: list[SendResult] = []
        for message, data, detail in rendered:
            if data is None:
                results.append(SendResult.failed(message.delivery_id, detail, transient=False))
                continue
            try:
                self._write(message.delivery_id, data)
            except OSError as exc:
                results.append(
                    SendResult.failed(message.delivery_id, f"outbox write failed: {exc}", transient=True)
                )
            else:
                results.append(SendResult.sent(message.delivery_id, detail.strip("<>")))
        return results

    def _write(self, delivery_id: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{delivery_id}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.directory / f"{delivery_id}.eml")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def probe(self) -> ProbeResult:
        """Whether a file can be written into the directory (created if missing), and removed again."""
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> ProbeResult:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=self.directory)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            return ProbeResult(False, f"the outbox is not writable: {exc}")
        return ProbeResult(True, f"the outbox {self.directory} is writable")

    async def close(self) -> None:
        return None


def from_sender(
    settings: Mapping[str, Any],
    credentials: Mapping[str, str],
    *,
    pool_size: int,
    root: Path = Path(".emailkit") / "outbox",
    keyring: DkimKeyring | None = None,
) -> OutboxProvider:
    """An outbox sender: settings {dir?}, no credentials. ``dir`` is a relative path inside ``root`` (the
    instance's EMAILKIT_OUTBOX_DIR): an API key must not make the server write anywhere else."""
    refuse_unknown(settings, ("dir",))
    refuse_unknown(credentials, ())
    sub = text(settings, "dir")
    if sub is None:
        return OutboxProvider(root, keyring=keyring)
    path = PurePosixPath(sub)
    if path.is_absolute() or "\\" in sub or any(part in ("..", "") for part in sub.split("/")):
        raise SenderConfigError("dir", "must be a relative path inside the instance's outbox, without '..'")
    return OutboxProvider(root / path, keyring=keyring)
