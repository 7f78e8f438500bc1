"""Senders' bounce mailboxes as the API meets them: checked on createSender/updateSender, tried by testSender.

The composition root hands :class:`SenderMailboxes` to the domain (as its ``SenderMailboxCheck`` port), which
never imports IMAP code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imapclient.exceptions import IMAPClientError

from emailkit.domain.ports.provider import ProbeResult
from emailkit.inbound.mailbox import MailboxError, try_login
from emailkit.inbound.mailbox_config import MailboxConfig


@dataclass(frozen=True)
class SenderMailboxes:
    # Seconds testSender waits for the IMAP server, all commands together.
    probe_timeout: float = 15.0

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, str]) -> None:
        MailboxConfig.from_sender(settings, credentials)

    async def probe(self, settings: Mapping[str, Any], credentials: Mapping[str, str]) -> ProbeResult | None:
        config = MailboxConfig.from_sender(settings, credentials)
        if config is None:
            return None
        try:
            said = await asyncio.wait_for(
                asyncio.to_thread(try_login, config, self.probe_timeout), self.probe_timeout + 5
            )
        except MailboxError as exc:
            return ProbeResult(False, str(exc))
        except (OSError, IMAPClientError, TimeoutError) as exc:
            return ProbeResult(False, f"{config.describe()}: {exc or type(exc).__name__}")
        return ProbeResult(True, said)
