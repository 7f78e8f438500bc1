"""The Event type (one entry of the event log) and `Subscriber.events`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Protocol

import strawberry
from strawberry.scalars import JSON

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.db.tables.feedback import Event as EventRow
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, Node, to_global_id
from emailkit.schema.types.lazy import resolved

if TYPE_CHECKING:
    from emailkit.schema.types.campaigns import CampaignType
    from emailkit.schema.types.subscribers import SubscriberType

strawberry.enum(
    EventType,
    name="EventType",
    description=(
        "What happened to a message; CUSTOM: an event your own systems sent (trackEvent, POST /api/events)."
    ),
)
strawberry.enum(BounceType, name="BounceType", description="HARD: permanent failure; SOFT: temporary.")

# Lazy: both modules import this one, subscribers directly (Subscriber.events), campaigns through deliveries.
CampaignRef = Annotated["CampaignType", strawberry.lazy("emailkit.schema.types.campaigns")]
SubscriberRef = Annotated["SubscriberType", strawberry.lazy("emailkit.schema.types.subscribers")]


@strawberry.type(
    name="Event",
    description=(
        "One thing that happened to one recipient of one message, or (CUSTOM) one thing a person did that "
        "your own systems reported."
    ),
)
class EventNode(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    subscriber_pk: strawberry.Private[int | None]
    type: EventType
    bounce_type: BounceType | None
    email: str | None = strawberry.field(description="Null for anonymous opens and clicks.")
    provider: str = strawberry.field(
        description="Who reported it: a provider name, `emailkit` for tracking, `api` for CUSTOM events."
    )
    provider_message_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    url: str | None = strawberry.field(description="The clicked link.")
    user_agent: str | None
    ip: str | None
    reason: str | None = strawberry.field(description="The provider's explanation (bounce, drop, deferral).")
    metadata: JSON | None = strawberry.field(description="The custom data the message carried back.")
    name: str | None = strawberry.field(description="A CUSTOM event's name (null for the other types).")
    properties: JSON | None = strawberry.field(
        description="A CUSTOM event's properties, a JSON object (null for the other types)."
    )

    @strawberry.field
    async def campaign(self, info: Info) -> CampaignRef | None:
        return await load_one(
            info.context.loaders.campaign_by_id, self.campaign_pk, resolved(CampaignRef).from_model
        )

    @strawberry.field
    async def subscriber(self, info: Info) -> SubscriberRef | None:
        return await load_one(
            info.context.loaders.subscriber_by_id, self.subscriber_pk, resolved(SubscriberRef).from_model
        )

    @classmethod
    def from_model(cls, row: EventRow) -> EventNode:
        return cls(
            id=to_global_id("Event", row.id),
            pk=row.id,
            campaign_pk=row.campaign_id,
            subscriber_pk=row.subscriber_id,
            type=row.type,
            bounce_type=row.bounce_type,
            email=row.email,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            url=row.url,
            user_agent=row.user_agent,
            ip=row.ip,
            reason=row.reason,
            metadata=JSON(dict(row.meta)) if row.meta is not None else None,
            name=row.name,
            properties=JSON(dict(row.properties)) if row.properties is not None else None,
        )


class _HasPk(Protocol):
    pk: int


async def subscriber_events(
    root: _HasPk, info: Info, first: int = 50, after: str | None = None
) -> Connection[EventNode]:
    """The subscriber's events, newest first."""
    loaders = info.context.loaders
    return await info.context.child_connection(
        loaders.subscriber_event_page,
        loaders.subscriber_event_count,
        root.pk,
        EventNode.from_model,
        first,
        after,
    )
