"""The typed subscriber filter: a tree of frozen dataclasses, its limits, and its canonical JSON form.

Each node ANDs the conditions set on it; ``all_of`` / ``any_of`` / ``negated`` hold the ``and`` / ``or`` /
``not`` groups. The canonical form (camelCase keys, internal ids) is what a saved segment stores and what
`emailkit.domain.audience.segments.validate` reads back into the tree.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailkit.db.tables.audience import SubscriberStatus, SubscriptionStatus

MAX_DEPTH = 10
MAX_CONDITIONS = 100
MAX_PATH_SEGMENTS = 10
MAX_KEY_LENGTH = 128
MAX_STRING = 1000
MAX_IN_VALUES = 500
MAX_WITHIN_DAYS = 3650
# SQLite binds integers as signed 64-bit values.
MAX_INT = 2**63 - 1


class FilterOp(enum.StrEnum):
    EQ = "EQ"
    NE = "NE"
    GT = "GT"
    GTE = "GTE"
    LT = "LT"
    LTE = "LTE"
    CONTAINS = "CONTAINS"
    IN = "IN"
    EXISTS = "EXISTS"


class EngagementEvent(enum.StrEnum):
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    RECEIVED = "RECEIVED"


# --- the typed tree ---------------------------------------------------------------------------------------

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class StringMatch:
    """Case-insensitive; every key given must hold."""

    eq: str | None = None
    contains: str | None = None
    starts_with: str | None = None
    ends_with: str | None = None


@dataclass(frozen=True)
class DateRange:
    before: datetime | None = None
    after: datetime | None = None


@dataclass(frozen=True)
class AttributeCondition:
    path: tuple[str, ...]
    op: FilterOp
    value: Any = None


@dataclass(frozen=True)
class ListCondition:
    list_id: int
    # None: any subscription that is not UNSUBSCRIBED.
    status: SubscriptionStatus | None = None


@dataclass(frozen=True)
class EngagementCondition:
    event: EngagementEvent
    campaign_id: int | None = None
    within_days: int | None = None
    # In a flow's BRANCH only: the message of this step of the person's own run was opened (or clicked).
    flow_step: str | None = None


@dataclass(frozen=True)
class SubscriberFilter:
    all_of: tuple[SubscriberFilter, ...] = ()
    any_of: tuple[SubscriberFilter, ...] | None = None
    negated: SubscriberFilter | None = None
    email: StringMatch | None = None
    name: StringMatch | None = None
    status: SubscriberStatus | None = None
    created_at: DateRange | None = None
    attribute: AttributeCondition | None = None
    in_list: ListCondition | None = None
    engagement: EngagementCondition | None = None


def is_number(value: object) -> bool:
    """A JSON number: Python's bool is an int, JSON's is not a number."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the canonical JSON form ------------------------------------------------------------------------------


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _string_match_dict(m: StringMatch) -> dict[str, Any]:
    return _drop_none(
        {"eq": m.eq, "contains": m.contains, "startsWith": m.starts_with, "endsWith": m.ends_with}
    )


def filter_to_dict(f: SubscriberFilter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.all_of:
        out["and"] = [filter_to_dict(c) for c in f.all_of]
    if f.any_of is not None:
        out["or"] = [filter_to_dict(c) for c in f.any_of]
    if f.negated is not None:
        out["not"] = filter_to_dict(f.negated)
    if f.email is not None:
        out["email"] = _string_match_dict(f.email)
    if f.name is not None:
        out["name"] = _string_match_dict(f.name)
    if f.status is not None:
        out["status"] = f.status.value
    if f.created_at is not None:
        out["createdAt"] = _drop_none(
            {
                "before": f.created_at.before.isoformat() if f.created_at.before else None,
                "after": f.created_at.after.isoformat() if f.created_at.after else None,
            }
        )
    if f.attribute is not None:
        a = f.attribute
        out["attribute"] = {"path": ".".join(a.path), "op": a.op.value}
        if a.op is not FilterOp.EXISTS or a.value is False:
            out["attribute"]["value"] = a.value
    if f.in_list is not None:
        m = f.in_list
        out["list"] = _drop_none({"listId": m.list_id, "status": m.status.value if m.status else None})
    if f.engagement is not None:
        e = f.engagement
        out["engagement"] = _drop_none(
            {
                "event": e.event.value,
                "campaignId": e.campaign_id,
                "withinDays": e.within_days,
                "flowStep": e.flow_step,
            }
        )
    return out


def walk(f: SubscriberFilter, path: str = "filter") -> Iterator[tuple[str, SubscriberFilter]]:
    """Every node with its field path, parents first."""
    yield path, f
    for i, child in enumerate(f.all_of):
        yield from walk(child, f"{path}.and[{i}]")
    for i, child in enumerate(f.any_of or ()):
        yield from walk(child, f"{path}.or[{i}]")
    if f.negated is not None:
        yield from walk(f.negated, f"{path}.not")
