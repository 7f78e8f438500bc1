"""Provider name → parser factory, and the one call a webhook route makes per request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr

from emailkit.domain.ports.webhooks import CertificateFetcher, SeenTokenStore, WebhookParser, WebhookResult
from emailkit.providers.webhooks.brevo import BrevoWebhookParser
from emailkit.providers.webhooks.common import MemorySeenTokens
from emailkit.providers.webhooks.mailgun import MailgunWebhookParser
from emailkit.providers.webhooks.postmark import PostmarkWebhookParser
from emailkit.providers.webhooks.resend import ResendWebhookParser
from emailkit.providers.webhooks.sendgrid import SendGridWebhookParser
from emailkit.providers.webhooks.ses import SesWebhookParser
from emailkit.settings import Settings


@dataclass(frozen=True)
class WebhookDeps:
    """I/O the parsers need from the composition root."""

    # How to download an SNS signing certificate (the route wires an httpx client); None = directory only.
    fetch_certificate: CertificateFetcher | None = None
    # Mailgun token replay memory; shared by every parser built with these deps.
    seen_tokens: SeenTokenStore = field(default_factory=MemorySeenTokens)


ParserFactory = Callable[[Settings, WebhookDeps], WebhookParser]


class UnknownProvider(KeyError):
    """No webhook parser for this provider name (a 404 for the route)."""


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _ses(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return SesWebhookParser(
        topic_arns=settings.sns_topic_arns,
        cert_dir=settings.sns_cert_dir,
        fetch_certificate=deps.fetch_certificate,
        verify=settings.webhook_verify,
    )


def _sendgrid(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return SendGridWebhookParser(
        public_key=settings.sendgrid_webhook_public_key,
        tolerance_seconds=settings.webhook_tolerance_seconds,
        verify=settings.webhook_verify,
    )


def _mailgun(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return MailgunWebhookParser(
        signing_key=_secret(settings.mailgun_webhook_signing_key),
        tolerance_seconds=settings.webhook_tolerance_seconds,
        seen_tokens=deps.seen_tokens,
        verify=settings.webhook_verify,
    )


def _postmark(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return PostmarkWebhookParser(
        username=settings.postmark_webhook_username,
        password=_secret(settings.postmark_webhook_password),
        verify=settings.webhook_verify,
    )


def _brevo(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return BrevoWebhookParser(
        username=settings.brevo_webhook_username,
        password=_secret(settings.brevo_webhook_password),
        verify=settings.webhook_verify,
    )


def _resend(settings: Settings, deps: WebhookDeps) -> WebhookParser:
    return ResendWebhookParser(
        secret=_secret(settings.resend_webhook_secret),
        tolerance_seconds=settings.webhook_tolerance_seconds,
        verify=settings.webhook_verify,
    )


FACTORIES: Mapping[str, ParserFactory] = {
    "ses": _ses,
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "postmark": _postmark,
    "brevo": _brevo,
    "resend": _resend,
}


def build_parser(provider: str, settings: Settings, deps: WebhookDeps | None = None) -> WebhookParser:
    """Raises :class:`UnknownProvider`, or ``WebhookConfigError`` when a configured key is unusable."""
    factory = FACTORIES.get(provider)
    if factory is None:
        raise UnknownProvider(provider)
    return factory(settings, deps or WebhookDeps())


def build_parsers(settings: Settings, deps: WebhookDeps | None = None) -> dict[str, WebhookParser]:
    """Every parser, built once at start-up: they hold certificate caches and replay memory."""
    shared = deps or WebhookDeps()
    return {name: factory(settings, shared) for name, factory in FACTORIES.items()}


async def receive(
    parser: WebhookParser, headers: Mapping[str, str], body: bytes, now: datetime
) -> WebhookResult:
    """Verify, then either hand back a control message to act on or the events to store.

    Raises ``WebhookError`` subclasses; their ``status_code`` is the HTTP answer.
    """
    await parser.verify(headers, body, now)
    confirmation = parser.confirmation(headers, body)
    if confirmation is not None:
        return WebhookResult(events=[], confirmation=confirmation)
    return WebhookResult(events=parser.parse(headers, body))
