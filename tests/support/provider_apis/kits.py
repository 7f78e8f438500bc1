"""One description per provider of how to build it, reach its fake API and read its webhooks back, so a
test can run against each provider in turn."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from emailkit.domain.ports.provider import EmailProvider
from emailkit.domain.ports.webhooks import WebhookParser
from emailkit.providers.webhooks.brevo import BrevoWebhookParser
from emailkit.providers.webhooks.mailgun import MailgunWebhookParser
from emailkit.providers.webhooks.postmark import PostmarkWebhookParser
from emailkit.providers.webhooks.resend import ResendWebhookParser
from tests.support.provider_apis import brevo, mailgun, postmark, resend
from tests.support.provider_apis.common import Accepted, ApiState, serve


@dataclass(frozen=True)
class Kit:
    name: str
    key: str
    credential: str  # the credentials key holding it
    app: Callable[[ApiState], Starlette]
    webhook: Callable[[Accepted], tuple[dict[str, str], bytes]]
    parser: Callable[[], WebhookParser]
    #: Messages per request.
    per_request: int
    #: What a 429 answer's headers ask us to wait (Postmark documents no rate-limit header).
    retry_after: float | None
    #: The provider's words for a wrong key.
    bad_key_words: str
    extra_settings: tuple[tuple[str, str], ...] = ()

    def build(
        self, url: str, *, key: str | None = None, pool_size: int = 10, **settings: Any
    ) -> EmailProvider:
        module = importlib.import_module(f"emailkit.providers.{self.name}")
        provider: EmailProvider = module.from_sender(
            {**dict(self.extra_settings), "baseUrl": url, **settings},
            {self.credential: key or self.key},
            pool_size=pool_size,
        )
        return provider


KITS = [
    Kit(
        "mailgun",
        mailgun.API_KEY,
        "apiKey",
        mailgun.mailgun_app,
        lambda a: ({}, mailgun.webhook(a)),
        lambda: MailgunWebhookParser(signing_key=None, verify=False),
        per_request=1,
        retry_after=20,
        bad_key_words="Mailgun 401: Forbidden",
        extra_settings=(("domain", mailgun.DOMAIN),),
    ),
    Kit(
        "postmark",
        postmark.SERVER_TOKEN,
        "serverToken",
        postmark.postmark_app,
        lambda a: ({}, postmark.webhook(a)),
        lambda: PostmarkWebhookParser(username=None, password=None, verify=False),
        per_request=500,
        retry_after=None,
        bad_key_words="Postmark 401: The Server Token you provided",
    ),
    Kit(
        "resend",
        resend.API_KEY,
        "apiKey",
        resend.resend_app,
        resend.webhook,
        lambda: ResendWebhookParser(secret=None, verify=False),
        per_request=100,
        retry_after=1,
        bad_key_words="Resend 403: invalid_api_key: API key is invalid",
    ),
    Kit(
        "brevo",
        brevo.API_KEY,
        "apiKey",
        brevo.brevo_app,
        lambda a: ({}, brevo.webhook(a)),
        lambda: BrevoWebhookParser(username=None, password=None, verify=False),
        per_request=1,
        retry_after=7,
        bad_key_words="Brevo 401: unauthorized: Key not found",
    ),
]


@asynccontextmanager
async def api(kit: Kit) -> AsyncIterator[tuple[str, ApiState]]:
    state = ApiState(key=kit.key)
    async with serve(kit.app(state)) as url:
        yield url, state


@asynccontextmanager
async def provider(kit: Kit, url: str, **kwargs: Any) -> AsyncIterator[EmailProvider]:
    built = kit.build(url, **kwargs)
    try:
        yield built
    finally:
        await built.close()


def environment(kit: Kit, url: str, key: str | None = None) -> dict[str, Any]:
    """The Settings fields (EMAILKIT_* variables) that choose this provider and point it at ``url``."""
    secret = "server_token" if kit.name == "postmark" else "api_key"
    fields: dict[str, Any] = {
        "provider": kit.name,
        f"{kit.name}_base_url": url,
        f"{kit.name}_{secret}": key or kit.key,
    }
    if kit.name == "mailgun":
        fields["mailgun_domain"] = mailgun.DOMAIN
    return fields
