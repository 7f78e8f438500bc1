"""Query: `delivery(id)`."""

from __future__ import annotations

import strawberry

from emailkit.schema.context import Info
from emailkit.schema.relay import decode_id_or_none
from emailkit.schema.types.deliveries import DeliveryType


@strawberry.type
class Query:
    @strawberry.field(description="A delivery (campaign recipient or transactional message) by ID.")
    async def delivery(self, info: Info, id: strawberry.ID) -> DeliveryType | None:
        pk = decode_id_or_none(id, "Delivery")
        row = await info.context.loaders.delivery_by_id.load(pk) if pk is not None else None
        return DeliveryType.from_model(row) if row is not None else None
