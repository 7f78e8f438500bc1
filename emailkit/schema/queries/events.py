"""Query: `events(filter)`, the event log."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from emailkit.db.tables.feedback import EventType
from emailkit.domain.feedback import analytics
from emailkit.schema.context import Info
from emailkit.schema.relay import Connection, parse_global_id
from emailkit.schema.types.events import EventNode


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
