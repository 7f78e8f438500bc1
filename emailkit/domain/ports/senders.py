"""What the domain needs to turn a sender row into something that sends: a provider builder and a rate limiter;
and to check the bounce mailbox a sender may name.

Composition roots pass ``emailkit.providers.senders.SenderProviderFactory``, a limiter factory over Redis
(``emailkit.tasks.ratelimit``) and ``emailkit.inbound.sender_mailboxes.SenderMailboxes``; the domain never
imports any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from emailkit.domain.ports.provider import EmailProvider, ProbeResult
from emailkit.domain.ports.ratelimit import RateLimiter


class ProviderFactory(Protocol):
    def __call__(
        self, type: str, settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
    ) -> EmailProvider:
        """A provider for the sender (not connected yet); raises SenderConfigError naming the bad key."""
        ...


#: ``limiter_for(key, per_second)``: a limit of `per_second` messages shared by every process asking for `key`.
LimiterFactory = Callable[[str, float], RateLimiter]


#: A sender's bounce mailbox lives beside its provider's keys: settings ``bounceMailbox: {url, processedFolder?,
#: unhandledFolder?}`` and credentials ``mailboxPassword``. The provider is never shown them.
MAILBOX_SETTING: Final = "bounceMailbox"
MAILBOX_CREDENTIAL: Final = "mailboxPassword"


def provider_part(
    settings: Mapping[str, Any], credentials: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings and credentials that are the provider's (each provider refuses keys it does not know)."""
    return (
        {k: v for k, v in settings.items() if k != MAILBOX_SETTING},
        {k: v for k, v in credentials.items() if k != MAILBOX_CREDENTIAL},
    )


class SenderMailboxCheck(Protocol):
    """Checks and tries a sender's bounce mailbox (the IMAP reader's side of a sender)."""

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, str]) -> None:
        """Raises SenderConfigError naming the bad key (``bounceMailbox.url``, ``mailboxPassword``...)."""
        ...

    async def probe(self, settings: Mapping[str, Any], credentials: Mapping[str, str]) -> ProbeResult | None:
        """Log in and open the folder read, changing nothing; None when the sender names no mailbox."""
        ...
