"""The variables templates see: ``subscriber``, ``campaign``, ``unsubscribe_url``, in campaign mail
``webview_url``, and what the caller adds.

Plain dicts, built once per recipient. In templates a key wins over a dict method of the same name, so
``subscriber.attributes.items`` is the subscriber's ``items`` attribute (see ``jinja._Sandbox.getattr``).
"""

from __future__ import annotations

from typing import Any

from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign

SAMPLE_UNSUBSCRIBE_URL = "https://example.com/unsubscribe/sample-token"
SAMPLE_WEBVIEW_URL = "https://example.com/view/sample-token"


def subscriber_vars(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "attributes": dict(subscriber.attributes or {}),
        "status": str(subscriber.status),
    }


def campaign_vars(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "subject": campaign.subject,
        "from_email": campaign.from_email,
        "from_name": campaign.from_name,
        "reply_to": campaign.reply_to,
    }


def template_context(
    *,
    subscriber: dict[str, Any],
    campaign: dict[str, Any] | None = None,
    unsubscribe_url: str = "",
    webview_url: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The render context for one recipient; ``extra`` (e.g. transactional data) may not shadow the three, nor
    ``webview_url`` when it is given (campaign mail)."""
    context = dict(extra)
    context.update(subscriber=subscriber, campaign=campaign or {}, unsubscribe_url=unsubscribe_url)
    if webview_url is not None:
        context["webview_url"] = webview_url
    return context


def sample_subscriber() -> dict[str, Any]:
    return {
        "id": 0,
        "email": "ada.lovelace@example.com",
        "name": "Ada Lovelace",
        "attributes": {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "city": "London",
            "plan": "pro",
            "points": 120,
        },
        "status": "ENABLED",
    }


def sample_campaign(*, name: str = "Sample campaign", subject: str = "Our latest news") -> dict[str, Any]:
    return {
        "id": 0,
        "name": name,
        "subject": subject,
        "from_email": "news@example.com",
        "from_name": "Example News",
        "reply_to": None,
    }


def sample_context(**overrides: Any) -> dict[str, Any]:
    """A realistic context for previews and validation; a fresh dict every call, so callers may change it."""
    context: dict[str, Any] = {
        "subscriber": sample_subscriber(),
        "campaign": sample_campaign(),
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE_URL,
        "webview_url": SAMPLE_WEBVIEW_URL,
    }
    context.update(overrides)
    return context
