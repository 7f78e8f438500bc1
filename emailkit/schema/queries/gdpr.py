"""Query: `exportSubscriberData`, a data-subject access request (ADMIN or EDITOR keys)."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from emailkit.domain.audience import gdpr
from emailkit.domain.errors import NotFound
from emailkit.schema.context import Info
from emailkit.schema.permissions import CanWrite
from emailkit.schema.relay import query_id, to_global_id


@strawberry.type
class Query:
    @strawberry.field(
        permission_classes=[CanWrite],
        description=(
            "Everything stored about a subscriber (GDPR access request) as one JSON document: profile, "
            "attributes, subscriptions, deliveries, events and suppression. Null when the subscriber does "
            "not exist. ADMIN or EDITOR keys."
        ),
    )
    async def export_subscriber_data(self, info: Info, id: strawberry.ID) -> JSON | None:
        pk = query_id(id, "Subscriber")
        try:
            async with info.context.loaders.session() as session:
                document = await gdpr.export_subscriber_data(session, pk, global_id=to_global_id)
        except NotFound:
            return None
        return JSON(document)
