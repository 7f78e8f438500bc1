"""Segments: the typed subscriber filter input, previews, and saved segments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Segment as SegmentRow
from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.audience.segments.filter import MAX_CONDITIONS, MAX_DEPTH, EngagementEvent, FilterOp
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.schema.context import Info
from emailkit.schema.cost import AUDIENCE_COUNT, cost
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.errors import DeletePayload, UserError, mutate, to_user_errors
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import (
    Connection,
    Node,
    decode_id,
    decode_id_or_none,
    parse_global_id,
    to_global_id,
)

if TYPE_CHECKING:
    from emailkit.schema.subscribers import SubscriberType

strawberry.enum(
    FilterOp,
    name="FilterOp",
    description=(
        'EQ / NE / IN compare typed values (5 never equals "5"; NE needs the attribute to be present). '
        "GT / GTE / LT / LTE compare numbers with numbers and strings with strings (byte order). CONTAINS is "
        "a case-insensitive substring for strings and element membership for arrays. EXISTS takes true "
        "(default) or false."
    ),
)
strawberry.enum(EngagementEvent, name="EngagementEvent", description="RECEIVED means a SENT delivery.")

# Strawberry resolves this lazily: the subscribers module imports the filter input from here.
SubscriberRef = Annotated["SubscriberType", strawberry.lazy("emailkit.schema.subscribers")]

K = TypeVar("K")
V = TypeVar("V")


# --- the filter input -------------------------------------------------------------------------------------


@strawberry.input(description="Case-insensitive text match; every field given must hold.")
class StringFilter:
    eq: str | None = None
    contains: str | None = None
    starts_with: str | None = None
    ends_with: str | None = None


@strawberry.input(description="Strictly before / strictly after; give one or both (with a timezone offset).")
class DateTimeFilter:
    before: datetime | None = None
    after: datetime | None = None


@strawberry.input(description='A condition on a subscriber attribute, e.g. path "address.city".')
class AttributeFilter:
    path: str = strawberry.field(description="Keys separated by dots.")
    op: FilterOp
    value: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="A string, number, boolean or null; a list for IN; true/false (or omitted) for EXISTS.",
    )


@strawberry.input(
    description="Membership of a list; without status, any subscription that is not UNSUBSCRIBED."
)
class ListMembershipFilter:
    list_id: strawberry.ID
    status: SubscriptionStatus | None = None


@strawberry.input(description="Received / opened / clicked one campaign, or any campaign without campaignId.")
class EngagementFilter:
    event: EngagementEvent
    campaign_id: strawberry.ID | None = None
    within_days: int | None = strawberry.field(default=None, description="Only the last N days (N >= 1).")


@strawberry.input(
    description=(
        "A subscriber filter. The fields set on one node are ANDed; `and`, `or` and `not` group nodes. An "
        f"empty node matches everyone. At most {MAX_DEPTH} levels and {MAX_CONDITIONS} "
        "conditions."
    )
)
class SubscriberFilterInput:
    and_: list[SubscriberFilterInput] | None = strawberry.field(name="and", default=None)
    or_: list[SubscriberFilterInput] | None = strawberry.field(name="or", default=None)
    not_: SubscriberFilterInput | None = strawberry.field(name="not", default=None)
    email: StringFilter | None = None
    name: StringFilter | None = None
    status: SubscriberStatus | None = None
    created_at: DateTimeFilter | None = None
    attribute: AttributeFilter | None = None
    in_list: ListMembershipFilter | None = strawberry.field(name="list", default=None)
    engagement: EngagementFilter | None = None


class _ToDomain:
    """The input as the domain's JSON form, with global IDs decoded; problems are collected with paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def id(self, value: str, kind: str, path: str) -> int | None:
        parsed = parse_global_id(value)
        if parsed is None or parsed[0] != kind:
            self.errors.append(FieldError(path, f"Not a valid {kind} ID: {value!r}", ErrorCode.INVALID_ID))
            return None
        return parsed[1]

    @staticmethod
    def text(f: StringFilter) -> dict[str, Any]:
        out = {"eq": f.eq, "contains": f.contains, "startsWith": f.starts_with, "endsWith": f.ends_with}
        return {k: v for k, v in out.items() if v is not None}

    def node(self, f: SubscriberFilterInput, path: str, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            self.errors.append(
                FieldError(path, f"Filters may nest at most {MAX_DEPTH} levels", ErrorCode.INVALID_FILTER)
            )
            return {}
        out: dict[str, Any] = {}
        if f.and_ is not None:
            out["and"] = [self.node(c, f"{path}.and[{i}]", depth + 1) for i, c in enumerate(f.and_)]
        if f.or_ is not None:
            out["or"] = [self.node(c, f"{path}.or[{i}]", depth + 1) for i, c in enumerate(f.or_)]
        if f.not_ is not None:
            out["not"] = self.node(f.not_, f"{path}.not", depth + 1)
        if f.email is not None:
            out["email"] = self.text(f.email)
        if f.name is not None:
            out["name"] = self.text(f.name)
        if f.status is not None:
            out["status"] = f.status.value
        if f.created_at is not None:
            out["createdAt"] = {"before": f.created_at.before, "after": f.created_at.after}
        if f.attribute is not None:
            a = f.attribute
            out["attribute"] = {"path": a.path, "op": a.op.value}
            if a.value is not strawberry.UNSET:
                out["attribute"]["value"] = a.value
        if f.in_list is not None:
            list_id = self.id(f.in_list.list_id, "MailingList", f"{path}.list.listId")
            status = f.in_list.status.value if f.in_list.status is not None else None
            out["list"] = {"listId": list_id, "status": status}
        if f.engagement is not None:
            e = f.engagement
            campaign_id = (
                self.id(e.campaign_id, "Campaign", f"{path}.engagement.campaignId")
                if e.campaign_id is not None
                else None
            )
            out["engagement"] = {
                "event": e.event.value,
                "campaignId": campaign_id,
                "withinDays": e.within_days,
            }
        return out


def filter_to_domain(f: SubscriberFilterInput, path: str = "filter") -> dict[str, Any]:
    """Raises DomainError (malformed IDs, nesting too deep); call it inside the service call's error handling."""
    convert = _ToDomain()
    raw = convert.node(f, path, 1)
    if convert.errors:
        raise DomainError(convert.errors)
    return raw


def filter_for_api(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stored filter with internal ids turned back into global IDs, ready to send back as input."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("and", "or"):
            out[key] = [filter_for_api(c) for c in value]
        elif key == "not":
            out[key] = filter_for_api(value)
        elif key == "list":
            out[key] = {**value, "listId": to_global_id("MailingList", value["listId"])}
        elif key == "engagement" and value.get("campaignId") is not None:
            out[key] = {**value, "campaignId": to_global_id("Campaign", value["campaignId"])}
        else:
            out[key] = value
    return out


def invalid_filter(exc: DomainError) -> GraphQLError:
    errors = [{"field": e.field, "message": e.message, "code": e.code.value} for e in exc.errors]
    return GraphQLError(
        f"Invalid filter: {exc}", extensions={"code": ErrorCode.INVALID_FILTER.value, "userErrors": errors}
    )


async def subscriber_connection(
    info: Info,
    f: SubscriberFilterInput,
    first: int,
    after: str | None,
    convert: Callable[[SubscriberRow], SubscriberType],
) -> Connection[SubscriberType]:
    """`subscribers(filter:)`: a query has no userErrors, so a bad filter is a GraphQL error INVALID_FILTER."""
    try:
        raw = filter_to_domain(f)
        return await info.context.connection(
            lambda s, n, a: segments.find_subscribers(s, raw, first=n, after=a), convert, first, after
        )
    except DomainError as exc:
        raise invalid_filter(exc) from None


# --- types ------------------------------------------------------------------------------------------------


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


@strawberry.type(name="SegmentPreview")
class SegmentPreviewType:
    count: int | None = strawberry.field(description="Matching subscribers; null when the filter is invalid.")
    rows: strawberry.Private[list[SubscriberRow]]
    user_errors: list[UserError]

    @strawberry.field(description=f"The first {segments.SAMPLE_SIZE} matches, lowest ids first.")
    def sample(self) -> list[SubscriberRef]:
        # Imported here: the subscribers module imports this one for the filter input.
        from emailkit.schema.subscribers import SubscriberType

        return [SubscriberType.from_model(r) for r in self.rows]


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
        pk = decode_id_or_none(id, "Segment")
        row = await info.context.loaders.segment_by_id.load(pk) if pk is not None else None
        return SegmentType.from_model(row) if row is not None else None

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
