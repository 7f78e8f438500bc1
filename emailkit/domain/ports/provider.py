"""The port between the send pipeline and the email providers.

The pipeline renders each recipient's message into an :class:`OutgoingMessage`, hands a batch of them to an
:class:`EmailProvider`, and gets back one :class:`SendResult` per message, in the same order. Providers never
raise for something that went wrong with one recipient or with the provider's service: they classify it as
transient (retry later) or permanent (give up on that recipient), so a batch always yields a full set of
results the ledger can record. They raise only for programming errors.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Header that ties a message (and bounces quoting it) back to its delivery.
DELIVERY_HEADER = "X-Emailkit-Delivery"
#: Name of the provider metadata field carrying the delivery id (SES tag, SendGrid custom_args key).
DELIVERY_TAG = "emailkit_delivery"

#: Suffix of the name of a personal value as the HTML part shows it (see ``OutgoingMessage.personal``).
PERSONAL_HTML = ":html"

# Delivery ids end up in file names (outbox), SES tag values and headers; this alphabet is safe in all three.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One fully rendered message for one recipient.

    ``headers`` holds the extra header fields (List-Unsubscribe, List-Unsubscribe-Post, List-Id, ...); the
    structural ones (From, To, Subject, Date, Message-ID, MIME, ``X-Emailkit-Delivery``) are derived from the
    other fields. ``tags`` is metadata the provider echoes back in its events.
    """

    delivery_id: str
    sender: str
    to: Address
    from_: Address
    subject: str
    html: str | None = None
    text: str | None = None
    reply_to: Address | None = None
    message_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Whose mail this is: the From domain's DKIM key is looked up among that workspace's sending domains.
    workspace_id: int | None = None
    #: The per-person values this message was rendered with (unsubscribe URL, tracked links, name, ...), each
    #: under a name that means the same in every message of one campaign. A provider that sends many people
    #: one request with per-recipient substitutions finds them in the content to factor it (see
    #: ``emailkit.providers.personalised``); nothing else reads them, and a value missing here only means that
    #: message goes out on its own. ``<name>:html`` holds a value as the HTML part shows it, where that
    #: differs (escaped).
    personal: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _DELIVERY_ID.fullmatch(self.delivery_id):
            raise ValueError(f"delivery_id must match {_DELIVERY_ID.pattern}, got {self.delivery_id!r}")
        if self.html is None and self.text is None:
            raise ValueError("a message needs an HTML part, a text part, or both")

    @property
    def recipient(self) -> str:
        return self.to.email


@dataclass(frozen=True, slots=True)
class SendResult:
    delivery_id: str
    ok: bool
    provider_message_id: str | None = None
    error: str | None = None
    #: Worth retrying later (rate limits, 4xx SMTP, 5xx HTTP, timeouts, dropped connections).
    transient: bool = False
    #: Seconds the provider asked us to wait before retrying, when it said so.
    retry_after: float | None = None

    @classmethod
    def sent(cls, delivery_id: str, provider_message_id: str | None) -> SendResult:
        return cls(delivery_id, True, provider_message_id=provider_message_id)

    @classmethod
    def failed(
        cls, delivery_id: str, error: str, *, transient: bool, retry_after: float | None = None
    ) -> SendResult:
        return cls(delivery_id, False, error=error, transient=transient, retry_after=retry_after)


#: Called with the delivery ids a provider is about to hand over (see :meth:`EmailProvider.send_batch`).
CommitHook = Callable[[Sequence[str]], Awaitable[None]]
#: Called with the results of messages whose hand-over has just ended (see :meth:`EmailProvider.send_batch`).
ResultHook = Callable[[Sequence[SendResult]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a provider answered when asked, without sending, whether it accepts our connection and credentials."""

    ok: bool
    #: The provider's own words: an SMTP reply line, an HTTP status with the error body's message, ...
    message: str


class SenderConfigError(ValueError):
    """A sender's settings or credentials cannot build a provider; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EmailProvider(Protocol):
    #: Largest batch worth handing to one ``send_batch`` call.
    max_batch_size: int

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        """Send each message; return one result per message, in order.

        ``on_commit`` is awaited with the ids of messages about to be handed over, before any of them can
        reach the provider (messages that failed validation are never passed and come back as permanent
        failures). Past that point a crash may leave them delivered, which is what the hook lets the caller
        record. A provider calls it once for the whole batch, or once per group right before that group's
        final hand-over (smtp: per message, before the terminating "." of DATA), which narrows what a
        crash leaves in doubt; an id is passed again when its hand-over is retried on a new connection.
        If it raises, the messages it was called for are not sent and the exception propagates.

        ``on_result``, when the provider supports it, is awaited with the results of one request as soon as
        it ends, before the request's slot goes to another one (HTTP providers: each SES or SendGrid
        request). With ``on_commit`` called per request too, only the requests in flight are ever
        committed-but-unrecorded, which bounds what a crash leaves in doubt. SMTP, whose replies arrive one
        message at a time, hands them over in groups (``REPORT_EVERY``) while its sessions go on. Those
        results are returned as well; the caller records the ones it was not given through the hook.
        """
        ...

    async def probe(self) -> ProbeResult:
        """Connect and authenticate without sending anything; report what the provider answered.

        Never raises for the provider's answer or an unreachable provider: that is a ProbeResult with
        ``ok`` False and the reason.
        """
        ...

    async def close(self) -> None:
        """Release connections; the provider is unusable afterwards."""
        ...


def smtp_code_is_transient(code: int) -> bool:
    """4xx replies are temporary by definition (RFC 5321 4.2.1); anything else that is not 2xx/3xx is not."""
    return 400 <= code < 500


def http_status_is_transient(status: int) -> bool:
    """Rate limiting, request timeouts and server-side errors are worth retrying; other 4xx are not."""
    return status in (408, 429) or status >= 500
