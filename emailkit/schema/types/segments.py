"""The Segment type: a saved subscriber filter."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Segment as SegmentRow
from emailkit.schema.context import Info
from emailkit.schema.cost import AUDIENCE_COUNT, cost
from emailkit.schema.relay import Node, to_global_id
from emailkit.schema.types.filters import filter_for_api


@strawberry.type(name="Segment", description="A saved filter; evaluated whenever it is used.")
class SegmentType(Node):
    pk: strawberry.Private[int]
    name: str
    description: str
    filter: JSON = strawberry.field(description="The SubscriberFilterInput, reusable as input.")
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="Subscribers matching right now.", metadata=cost(AUDIENCE_COUNT))
    async def subscriber_count(self, info: Info) -> int:
        return await info.context.loaders.segment_subscriber_count.load(self.pk)

    @classmethod
    def from_model(cls, row: SegmentRow) -> SegmentType:
        return cls(
            id=to_global_id("Segment", row.id),
            pk=row.id,
            name=row.name,
            description=row.description,
            filter=JSON(filter_for_api(row.filter)),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
