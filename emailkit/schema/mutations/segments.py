"""Mutations on saved segments: createSegment, updateSegment, deleteSegment."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.audience import Segment as SegmentRow
from emailkit.domain.audience.segments import store as segments
from emailkit.schema.context import Info
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.filters import SubscriberFilterInput, filter_to_domain
from emailkit.schema.types.segments import SegmentType


@strawberry.input
class CreateSegmentInput:
    name: str
    description: str | None = None
    filter: SubscriberFilterInput


@strawberry.input(description="Omitted fields keep their value; a new filter replaces the old one.")
class UpdateSegmentInput:
    id: strawberry.ID
    name: str | None = None
    description: str | None = None
    filter: SubscriberFilterInput | None = None


@strawberry.input
class DeleteSegmentInput:
    id: strawberry.ID


@strawberry.type
class SegmentPayload:
    segment: SegmentType | None
    user_errors: list[UserError]


def _payload(row: SegmentRow | None, errors: list[UserError]) -> SegmentPayload:
    return SegmentPayload(
        segment=SegmentType.from_model(row) if row is not None else None, user_errors=errors
    )


def _to_domain(input: CreateSegmentInput | UpdateSegmentInput) -> segments.SegmentInput:
    return segments.SegmentInput(
        name=input.name,
        description=input.description,
        filter=filter_to_domain(input.filter) if input.filter is not None else None,
    )


@strawberry.type
class Mutation:
    @write_mutation
    async def create_segment(self, info: Info, input: CreateSegmentInput) -> SegmentPayload:
        out = await mutate(info, lambda s: segments.create_segment(s, _to_domain(input)))
        return _payload(out.value, out.errors)

    @write_mutation
    async def update_segment(self, info: Info, input: UpdateSegmentInput) -> SegmentPayload:
        out = await mutate(
            info, lambda s: segments.update_segment(s, decode_id(input.id, "Segment"), _to_domain(input))
        )
        return _payload(out.value, out.errors)

    @write_mutation(description="Refused (IN_USE) while an unfinished campaign targets the segment.")
    async def delete_segment(self, info: Info, input: DeleteSegmentInput) -> DeletePayload:
        out = await mutate(info, lambda s: segments.delete_segment(s, decode_id(input.id, "Segment")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
