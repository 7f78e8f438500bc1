"""Queries: `segments`, `segment(id)` and `segmentPreview(filter)`."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.errors import DomainError
from emailkit.schema.context import Info
from emailkit.schema.cost import AUDIENCE_COUNT, cost
from emailkit.schema.errors import UserError, to_user_errors
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.filters import SubscriberFilterInput, filter_to_domain
from emailkit.schema.types.segments import SegmentType
from emailkit.schema.types.subscribers import SubscriberType


@strawberry.type(name="SegmentPreview")
class SegmentPreviewType:
    count: int | None = strawberry.field(description="Matching subscribers; null when the filter is invalid.")
    rows: strawberry.Private[list[SubscriberRow]]
    user_errors: list[UserError]

    @strawberry.field(description=f"The first {segments.SAMPLE_SIZE} matches, lowest ids first.")
    def sample(self) -> list[SubscriberType]:
        return [SubscriberType.from_model(r) for r in self.rows]


@strawberry.type
class Query:
    @strawberry.field(description="Saved segments, oldest first.")
    async def segments(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[SegmentType]:
        return await info.context.connection(
            lambda s, n, a: segments.find_segments(s, first=n, after=a), SegmentType.from_model, first, after
        )

    @strawberry.field
    async def segment(self, info: Info, id: strawberry.ID) -> SegmentType | None:
        return await load_one(
            info.context.loaders.segment_by_id, decode_id_or_none(id, "Segment"), SegmentType.from_model
        )

    @strawberry.field(
        description="How many subscribers a filter matches now, with a sample; nothing is saved.",
        metadata=cost(AUDIENCE_COUNT),
    )
    async def segment_preview(self, info: Info, filter: SubscriberFilterInput) -> SegmentPreviewType:
        try:
            raw = filter_to_domain(filter)
            async with info.context.loaders.session() as session:
                result = await segments.preview(session, raw)
        except DomainError as exc:
            return SegmentPreviewType(count=None, rows=[], user_errors=to_user_errors(exc))
        return SegmentPreviewType(count=result.count, rows=result.sample, user_errors=[])
