"""Mutation: `trackEvent`, a custom event sent by the user's own systems (see also POST /api/events)."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from emailkit.domain.automation import events
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.types.events import EventNode


@strawberry.input(
    description="A custom event about one subscriber, named by email or subscriberId (one of them)."
)
class TrackEventInput:
    name: str = strawberry.field(
        description="What happened: 1 to 100 letters, digits and `_ . : -`, e.g. `order.completed`."
    )
    email: str | None = None
    subscriber_id: strawberry.ID | None = None
    properties: JSON | None = strawberry.field(
        default=None, description="A JSON object of up to 16 KB; flows' templates see it as event.properties."
    )
    occurred_at: datetime | None = strawberry.field(
        default=None,
        description="When it happened (with a timezone offset); default now, at most a day ahead.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description=(
            "Up to 255 characters, unique per workspace for 30 days: the same key again records nothing new "
            "and answers with the first event (duplicate: true)."
        ),
    )


@strawberry.type
class TrackEventPayload:
    event: EventNode | None
    duplicate: bool = strawberry.field(
        description="The idempotency key was used before: `event` is the one it recorded then."
    )
    user_errors: list[UserError]


@strawberry.type
class Mutation:
    @write_mutation
    async def track_event(self, info: Info, input: TrackEventInput) -> TrackEventPayload:
        item = events.EventInput(
            name=input.name,
            email=input.email,
            subscriber_id=input.subscriber_id,
            properties=input.properties,
            occurred_at=input.occurred_at,
            idempotency_key=input.idempotency_key,
        )
        out = await mutate(info, lambda s: events.track_event(s, item))
        tracked = out.value
        return TrackEventPayload(
            event=EventNode.from_model(tracked.event) if tracked and tracked.event else None,
            duplicate=bool(tracked and tracked.duplicate),
            user_errors=out.errors,
        )
