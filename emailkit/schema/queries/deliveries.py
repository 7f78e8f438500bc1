"""Query: `delivery(id)`."""

from __future__ import annotations

import strawberry

from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import decode_id_or_none
from emailkit.schema.types.deliveries import DeliveryType


@strawberry.type
class Query:
    @strawberry.field(description="A delivery (campaign recipient or transactional message) by ID.")
    async def delivery(self, info: Info, id: strawberry.ID) -> DeliveryType | None:
        return await load_one(
            info.context.loaders.delivery_by_id, decode_id_or_none(id, "Delivery"), DeliveryType.from_model
        )
