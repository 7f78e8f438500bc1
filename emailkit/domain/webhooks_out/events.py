"""The event types an endpoint can subscribe to, what each one's ``data`` holds, and the envelope.

Every message has the same envelope (version 1)::

    {"id": "evt_…", "type": "campaign.started", "version": 1, "occurredAt": "2026-12-07T10:00:00.000Z",
     "workspaceId": "<global id>", "data": {…}}

Ids inside ``data`` are the API's global ids, so a receiver can query the object back. A field is added to
``data`` without a new version; a field removed or changing meaning would bump ``version``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from emailkit import globalid

ENVELOPE_VERSION: Final = 1


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    # data field → what it holds (documented in the README, "Webhooks you receive from emailkit").
    fields: Mapping[str, str]
    # The ordering key's family: events of one subscriber (or one campaign) reach an endpoint in order.
    ordered_by: str | None = None


_DELIVERY = {
    "deliveryId": "the delivery (one recipient of one campaign or transactional message)",
    "campaignId": "the campaign; null for a transactional message",
    "subscriberId": "the subscriber; null when the address is not a subscriber's",
    "email": "the recipient's address",
}
_CAMPAIGN = {
    "campaignId": "the campaign",
    "name": "its name",
    "status": "its status after the change (RUNNING, PAUSED, FINISHED, FAILED)",
    "reason": "why, when emailkit changed it (paused over the error budget, failed to render…), else null",
    "recipientsCount": "recipients planned",
    "sentCount": "messages handed to the provider so far",
    "failedCount": "recipients that failed so far",
}
_SUBSCRIBER = {
    "subscriberId": "the subscriber",
    "email": "the address",
    "name": "the name",
    "status": "ENABLED or BLOCKLISTED",
    "attributes": "the custom attributes (JSON object)",
}

_BY_SUBSCRIBER = "subscriber"
_BY_CAMPAIGN = "campaign"


def _types(*types: EventType) -> dict[str, EventType]:
    return {t.name: t for t in types}


EVENT_TYPES: Final = _types(
    EventType(
        "campaign.started",
        "A campaign started sending (by an operator or at its sendAt).",
        _CAMPAIGN,
        _BY_CAMPAIGN,
    ),
    EventType(
        "campaign.paused",
        "A campaign paused: by an operator, or by emailkit (over the error budget or the complaint limit).",
        _CAMPAIGN,
        _BY_CAMPAIGN,
    ),
    EventType("campaign.finished", "Every recipient of a campaign was handled.", _CAMPAIGN, _BY_CAMPAIGN),
    EventType(
        "campaign.failed",
        "A campaign stopped for good: its content no longer renders, every recipient failed, or it could not "
        "start at its sendAt.",
        _CAMPAIGN,
        _BY_CAMPAIGN,
    ),
    EventType(
        "delivery.sent",
        "A message was handed to the provider.",
        {**_DELIVERY, "providerMessageId": "the provider's id for the message, when it gave one"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "delivery.failed",
        "A message could not be handed over, for good (attempts spent, or a permanent error).",
        {**_DELIVERY, "error": "the last error"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "delivery.bounced",
        "The provider reported a bounce.",
        {
            **_DELIVERY,
            "bounceType": "HARD or SOFT",
            "reason": "the provider's reason, if any",
            "occurredAt": "when the provider saw it",
        },
        _BY_SUBSCRIBER,
    ),
    EventType(
        "complaint",
        "A recipient marked the message as spam.",
        {**_DELIVERY, "occurredAt": "when the provider saw it"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "open",
        "A recipient opened the message (tracking pixel).",
        {**_DELIVERY, "occurredAt": "when"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "click",
        "A recipient followed a tracked link.",
        {**_DELIVERY, "url": "the link's destination", "occurredAt": "when"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "subscriber.created",
        "A subscriber was added through the API or a public form (a CSV import reports import.finished, not one "
        "event per row).",
        _SUBSCRIBER,
        _BY_SUBSCRIBER,
    ),
    EventType(
        "subscriber.updated",
        "A subscriber's address, name, status or attributes changed.",
        _SUBSCRIBER,
        _BY_SUBSCRIBER,
    ),
    EventType(
        "subscriber.unsubscribed",
        "A subscriber unsubscribed from one list or from everything.",
        {
            "subscriberId": "the subscriber",
            "email": "the address",
            "listIds": "the lists left; null: from everything",
            "source": "how: LINK (an unsubscribe link, the one-click header or a provider's report), PREFERENCES, "
            "API, BLOCKLIST",
        },
        _BY_SUBSCRIBER,
    ),
    EventType(
        "subscriber.erased",
        "A subscriber was erased (GDPR): only the id is left to name them.",
        {"subscriberId": "the erased subscriber"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "import.finished",
        "A CSV import ended (FINISHED or FAILED).",
        {
            "importId": "the import",
            "status": "FINISHED or FAILED",
            "total": "rows read",
            "inserted": "subscribers added",
            "updated": "subscribers updated",
            "skipped": "rows skipped",
            "failed": "rows refused",
            "error": "why it failed, else null",
        },
    ),
    EventType(
        "flow.entered",
        "A subscriber entered an automation flow (one event per person, also for an import's many).",
        {"flowId": "the flow", "runId": "the person's run", "subscriberId": "the subscriber"},
        _BY_SUBSCRIBER,
    ),
    EventType(
        "flow.completed",
        "A subscriber reached the end of a flow (not sent for a run that exited early).",
        {"flowId": "the flow", "runId": "the person's run", "subscriberId": "the subscriber"},
        _BY_SUBSCRIBER,
    ),
)

# Emitted since automation landed; the catalogue keeps the slot for event types documented before they are.
RESERVED_EVENT_TYPES: Final = _types()

SUBSCRIBABLE: Final = frozenset(EVENT_TYPES) | frozenset(RESERVED_EVENT_TYPES)


def new_event_id() -> str:
    """``evt_`` and 128 random bits: the `webhook-id` receivers deduplicate on."""
    return "evt_" + secrets.token_urlsafe(16)


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as every time in an envelope."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gid(type_name: str, pk: int | None) -> str | None:
    return None if pk is None else globalid.encode(type_name, pk)


def envelope(
    event_id: str, type_name: str, data: Mapping[str, Any], *, workspace_id: int, occurred_at: datetime
) -> str:
    """The message body, serialised once: every attempt signs and sends exactly these bytes."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": type_name,
            "version": ENVELOPE_VERSION,
            "occurredAt": timestamp(occurred_at),
            "workspaceId": globalid.encode("Workspace", workspace_id),
            "data": data,
        }
    ).decode()
