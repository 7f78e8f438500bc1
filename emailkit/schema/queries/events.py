"""Query: `events(filter)`, the event log."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.feedback import EventType
from emailkit.domain.feedback import analytics
from emailkit.schema.context import Info
from emailkit.schema.relay import Connection, query_id
from emailkit.schema.types.events import EventNode


@strawberry.input(description="All given conditions must hold.")
class EventFilter:
    type: EventType | None = None
    provider: str | None = None
    campaign_id: strawberry.ID | None = None
    email: str | None = None
    name: str | None = strawberry.field(default=None, description="A CUSTOM event's name, exactly.")


@strawberry.type
class Query:
    @strawberry.field(description="Recorded events, newest first.")
    async def events(
        self, info: Info, first: int = 50, after: str | None = None, filter: EventFilter | None = None
    ) -> Connection[EventNode]:
        f = filter or EventFilter()
        domain_filter = analytics.EventFilter(
            type=f.type,
            provider=f.provider,
            campaign_id=query_id(f.campaign_id, "Campaign") if f.campaign_id is not None else None,
            email=f.email,
            name=f.name,
        )
        return await info.context.connection(
            lambda s, n, a: analytics.find_events(s, first=n, after=a, filter=domain_filter),
            EventNode.from_model,
            first,
            after,
        )
