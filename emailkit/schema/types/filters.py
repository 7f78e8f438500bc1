"""The typed subscriber filter (SubscriberFilterInput): its input types, and its conversion to the domain's
JSON form (global IDs decoded) and back.

`subscribers(filter:)`, `segmentPreview` and the segment mutations take it; a saved Segment returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.domain.audience.segments.filter import MAX_CONDITIONS, MAX_DEPTH, EngagementEvent, FilterOp
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.relay import parse_global_id, to_global_id

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
    flow_step: str | None = strawberry.field(
        default=None,
        description="Only in a flow's conditions (a BRANCH step's): the person OPENED or CLICKED the message of "
        "the step with this key, in their own run through the flow. Refused anywhere else.",
    )


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
        out.update(self.conditions(f, path))
        return out

    def conditions(self, f: SubscriberFilterInput, path: str) -> dict[str, Any]:
        """The node's own conditions, those besides and/or/not."""
        out: dict[str, Any] = {}
        if f.email is not None:
            out["email"] = self.text(f.email)
        if f.name is not None:
            out["name"] = self.text(f.name)
        if f.status is not None:
            out["status"] = f.status.value
        if f.created_at is not None:
            out["createdAt"] = {"before": f.created_at.before, "after": f.created_at.after}
        if f.attribute is not None:
            out["attribute"] = self.attribute(f.attribute)
        if f.in_list is not None:
            list_id = self.id(f.in_list.list_id, "MailingList", f"{path}.list.listId")
            status = f.in_list.status.value if f.in_list.status is not None else None
            out["list"] = {"listId": list_id, "status": status}
        if f.engagement is not None:
            out["engagement"] = self.engagement(f.engagement, f"{path}.engagement")
        return out

    @staticmethod
    def text(f: StringFilter) -> dict[str, Any]:
        out = {"eq": f.eq, "contains": f.contains, "startsWith": f.starts_with, "endsWith": f.ends_with}
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def attribute(a: AttributeFilter) -> dict[str, Any]:
        out: dict[str, Any] = {"path": a.path, "op": a.op.value}
        if a.value is not strawberry.UNSET:
            out["value"] = a.value
        return out

    def engagement(self, e: EngagementFilter, path: str) -> dict[str, Any]:
        campaign_id = (
            self.id(e.campaign_id, "Campaign", f"{path}.campaignId") if e.campaign_id is not None else None
        )
        out: dict[str, Any] = {"event": e.event.value, "campaignId": campaign_id, "withinDays": e.within_days}
        if e.flow_step is not None:
            # Only when given: outside a flow the domain refuses the key itself, whatever its value.
            out["flowStep"] = e.flow_step
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
    """A bad filter given to a query, which has no userErrors: a GraphQL error INVALID_FILTER."""
    errors = [{"field": e.field, "message": e.message, "code": e.code.value} for e in exc.errors]
    return GraphQLError(
        f"Invalid filter: {exc}", extensions={"code": ErrorCode.INVALID_FILTER.value, "userErrors": errors}
    )
