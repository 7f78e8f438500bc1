"""The event log: `Event` nodes, `events(filter)` and `Subscriber.events`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Protocol

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.db.tables.feedback import Event as EventRow
from emailkit.domain.feedback import analytics
from emailkit.schema.context import Info
from emailkit.schema.refs import campaign_by_pk, subscriber_by_pk
from emailkit.schema.relay import Connection, Node, parse_global_id, to_global_id

if TYPE_CHECKING:
    from emailkit.schema.campaigns import CampaignType
    from emailkit.schema.subscribers import SubscriberType

strawberry.enum(EventType, name="EventType", description="What happened to a message.")
strawberry.enum(BounceType, name="BounceType", description="HARD: permanent failure; SOFT: temporary.")


@strawberry.type(name="Event", description="One thing that happened to one recipient of one message.")
class EventNode(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    subscriber_pk: strawberry.Private[int | None]
    type: EventType
    bounce_type: BounceType | None
    email: str | None = strawberry.field(description="Null for anonymous opens and clicks.")
    provider: str = strawberry.field(
        description="Who reported it: a provider name, or `emailkit` for tracking."
    )
    provider_message_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    url: str | None = strawberry.field(description="The clicked link.")
    user_agent: str | None
    ip: str | None
    reason: str | None = strawberry.field(description="The provider's explanation (bounce, drop, deferral).")
    metadata: JSON | None = strawberry.field(description="The custom data the message carried back.")

    @strawberry.field
    async def campaign(
        self, info: Info
    ) -> Annotated[CampaignType, strawberry.lazy("emailkit.schema.campaigns")] | None:
        return await campaign_by_pk(info, self.campaign_pk)

    @strawberry.field
    async def subscriber(
        self, info: Info
    ) -> Annotated[SubscriberType, strawberry.lazy("emailkit.schema.subscribers")] | None:
        return await subscriber_by_pk(info, self.subscriber_pk)

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
        )


@strawberry.input(description="All given conditions must hold.")
class EventFilter:
    type: EventType | None = None
    provider: str | None = None
    campaign_id: strawberry.ID | None = None
    email: str | None = None


def _campaign_filter(value: strawberry.ID | None) -> int | None:
    if value is None:
        return None
    parsed = parse_global_id(value)
    if parsed is None or parsed[0] != "Campaign":
        raise GraphQLError(f"Not a valid Campaign ID: {value!r}", extensions={"code": "INVALID_ID"})
    return parsed[1]


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


async def event_node(info: Info, pk: int) -> EventNode | None:
    async with info.context.loaders.session() as session:
        row = (await analytics.events_by_ids(session, [pk])).get(pk)
    return EventNode.from_model(row) if row is not None else None


@strawberry.type
class Query:
    @strawberry.field(description="Recorded events, newest first.")
    async def events(
        self, info: Info, first: int = 50, after: str | None = None, filter: EventFilter | None = None
    ) -> Connection[EventNode]:
        f = filter or EventFilter()
        domain_filter = analytics.EventFilter(
            type=f.type, provider=f.provider, campaign_id=_campaign_filter(f.campaign_id), email=f.email
        )
        return await info.context.connection(
            lambda s, n, a: analytics.find_events(s, first=n, after=a, filter=domain_filter),
            EventNode.from_model,
            first,
            after,
        )
