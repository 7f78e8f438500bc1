"""Build the provider of a sender row: its type picks a provider module, whose ``from_sender`` reads the
settings and credentials. Composition roots hand :class:`SenderProviderFactory` to the domain (which never
imports providers); modules are imported on first use, so botocore loads only where an SES sender sends.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emailkit.domain.ports.dkim import DkimKeyring
from emailkit.domain.ports.provider import EmailProvider, SenderConfigError
from emailkit.domain.ports.senders import provider_part

#: Sender type -> the module whose ``from_sender(settings, credentials, *, pool_size)`` builds its provider.
MODULES: dict[str, str] = {
    "SMTP": "emailkit.providers.smtp",
    "SES": "emailkit.providers.ses",
    "SENDGRID": "emailkit.providers.sendgrid",
    "MAILGUN": "emailkit.providers.mailgun",
    "POSTMARK": "emailkit.providers.postmark",
    "RESEND": "emailkit.providers.resend",
    "BREVO": "emailkit.providers.brevo",
    "OUTBOX": "emailkit.providers.outbox",
}


class SenderProviderFactory:
    """``factory(type, settings, credentials, pool_size=...)`` -> a provider, or SenderConfigError."""

    def __init__(self, *, outbox_root: Path, keyring: DkimKeyring | None = None) -> None:
        self.outbox_root = outbox_root
        # The workspaces' sending domains: their keys sign what SMTP and OUTBOX senders send From them.
        self.keyring = keyring

    def __call__(
        self, type: str, settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
    ) -> EmailProvider:
        name = MODULES.get(type)
        if name is None:
            raise SenderConfigError("type", f"unknown sender type {type!r}")
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise SenderConfigError("type", f"{type} senders are not available in this version") from None
        # The bounce mailbox is the mailbox reader's business (emailkit.inbound.sender_mailboxes).
        settings, credentials = provider_part(settings, credentials)
        if type == "OUTBOX":
            provider: EmailProvider = module.from_sender(
                settings, credentials, pool_size=pool_size, root=self.outbox_root, keyring=self.keyring
            )
        elif type == "SMTP":
            provider = module.from_sender(settings, credentials, pool_size=pool_size, keyring=self.keyring)
        else:
            provider = module.from_sender(settings, credentials, pool_size=pool_size)
        return provider
