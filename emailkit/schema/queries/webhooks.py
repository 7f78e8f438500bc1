"""Queries of outgoing webhooks: `webhookEndpoints`, `webhookEndpoint` and `webhookEventTypes` (ADMIN keys)."""

from __future__ import annotations

import strawberry

from emailkit.domain.webhooks_out import endpoints
from emailkit.domain.webhooks_out.events import EVENT_TYPES, RESERVED_EVENT_TYPES
from emailkit.schema.context import Info
from emailkit.schema.permissions import admin_field
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.webhooks import WebhookEndpointType


@strawberry.type(description="An event type an endpoint can subscribe to.")
class WebhookEventType:
    name: str
    description: str
    data_fields: list[str] = strawberry.field(description="The fields of the envelope's `data`.")
    reserved: bool = strawberry.field(description="Accepted, but not emitted yet (automation flows).")


@strawberry.type
class Query:
    @admin_field(description="This workspace's webhook endpoints, oldest first.")
    async def webhook_endpoints(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[WebhookEndpointType]:
        return await info.context.connection(
            lambda s, n, a: endpoints.find_endpoints(s, first=n, after=a),
            WebhookEndpointType.from_model,
            first,
            after,
        )

    @admin_field(description="One webhook endpoint of this workspace; null when there is none with this id.")
    async def webhook_endpoint(self, info: Info, id: strawberry.ID) -> WebhookEndpointType | None:
        pk = decode_id_or_none(id, "WebhookEndpoint")
        if pk is None:
            return None
        async with info.context.loaders.session() as session:
            row = await endpoints.find_endpoint(session, pk)
            return None if row is None else WebhookEndpointType.from_model(row)

    @strawberry.field(
        description="Every event type, with the fields of its data (see the README's webhooks)."
    )
    def webhook_event_types(self) -> list[WebhookEventType]:
        return [
            WebhookEventType(
                name=t.name, description=t.description, data_fields=list(t.fields), reserved=reserved
            )
            for reserved, catalogue in ((False, EVENT_TYPES), (True, RESERVED_EVENT_TYPES))
            for t in catalogue.values()
        ]
