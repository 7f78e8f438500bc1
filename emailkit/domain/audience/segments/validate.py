"""A filter's JSON form read into the typed tree: every problem reported with its path, code INVALID_FILTER.

`parse_filter` checks the form alone; `validate_filter` also checks that the lists and campaigns it names
exist (a filter saved earlier may outlive them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import MailingList, SubscriberStatus, SubscriptionStatus
from emailkit.db.tables.sending import Campaign
from emailkit.domain.audience.segments.filter import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_INT,
    MAX_KEY_LENGTH,
    MAX_PATH_SEGMENTS,
    MAX_STRING,
    MAX_WITHIN_DAYS,
    AttributeCondition,
    DateRange,
    EngagementCondition,
    EngagementEvent,
    FilterOp,
    ListCondition,
    StringMatch,
    SubscriberFilter,
    is_number,
    walk,
)
from emailkit.domain.errors import ErrorCode, FieldError
from emailkit.domain.validation import raise_if

ORDERING = frozenset({FilterOp.GT, FilterOp.GTE, FilterOp.LT, FilterOp.LTE})

NODE_KEYS = frozenset(
    {"and", "or", "not", "email", "name", "status", "createdAt", "attribute", "list", "engagement"}
)
STRING_KEYS = {"eq": "eq", "contains": "contains", "startsWith": "starts_with", "endsWith": "ends_with"}


@dataclass
class _Parse:
    errors: list[FieldError] = field(default_factory=list)
    conditions: int = 0
    # A flow's BRANCH condition may ask about the messages of the flow's own steps.
    flow_steps: bool = False

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message, ErrorCode.INVALID_FILTER))


def _keys(raw: dict[str, Any], allowed: Sequence[str], path: str, ctx: _Parse) -> bool:
    unknown = sorted(set(raw) - set(allowed))
    for key in unknown:
        ctx.error(f"{path}.{key}", f"Unknown field {key!r}")
    return not unknown


def _object(raw: object, path: str, ctx: _Parse) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        ctx.error(path, "Must be an object")
        return None
    return raw


def _parse_string_match(raw: object, path: str, ctx: _Parse) -> StringMatch | None:
    obj = _object(raw, path, ctx)
    if obj is None or not _keys(obj, list(STRING_KEYS), path, ctx):
        return None
    given = {key: value for key, value in obj.items() if value is not None}
    if not given:
        ctx.error(path, "Give at least one of eq, contains, startsWith, endsWith")
        return None
    values: dict[str, str] = {}
    for key, value in given.items():
        if not isinstance(value, str) or not value:
            ctx.error(f"{path}.{key}", "Must be a non-empty string")
        elif len(value) > MAX_STRING:
            ctx.error(f"{path}.{key}", f"Must be at most {MAX_STRING} characters")
        else:
            values[STRING_KEYS[key]] = value
    return StringMatch(**values) if len(values) == len(given) else None


def _parse_datetime(raw: object, path: str, ctx: _Parse) -> datetime | None:
    value: datetime | None = None
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            ctx.error(path, "Must be an ISO 8601 date-time")
            return None
    else:
        ctx.error(path, "Must be an ISO 8601 date-time")
        return None
    if value.tzinfo is None:
        ctx.error(path, "Needs a timezone offset")
        return None
    return value


def _parse_date_range(raw: object, path: str, ctx: _Parse) -> DateRange | None:
    obj = _object(raw, path, ctx)
    if obj is None or not _keys(obj, ["before", "after"], path, ctx):
        return None
    raw_before, raw_after = obj.get("before"), obj.get("after")
    if raw_before is None and raw_after is None:
        ctx.error(path, "Give before, after or both")
        return None
    before = _parse_datetime(raw_before, f"{path}.before", ctx) if raw_before is not None else None
    after = _parse_datetime(raw_after, f"{path}.after", ctx) if raw_after is not None else None
    if (raw_before is not None and before is None) or (raw_after is not None and after is None):
        return None
    if before is not None and after is not None and after >= before:
        ctx.error(path, "after must be earlier than before")
        return None
    return DateRange(before=before, after=after)


def _parse_path(raw: object, path: str, ctx: _Parse) -> tuple[str, ...] | None:
    if not isinstance(raw, str) or not raw:
        ctx.error(path, "Must be a non-empty attribute path such as 'city' or 'address.city'")
        return None
    parts = tuple(raw.split("."))
    if len(parts) > MAX_PATH_SEGMENTS:
        ctx.error(path, f"At most {MAX_PATH_SEGMENTS} path segments")
        return None
    for part in parts:
        # Quotes, backslashes and control characters would need escaping inside SQLite JSON paths.
        if not part or len(part) > MAX_KEY_LENGTH or any(c in '"\\' or ord(c) < 32 for c in part):
            ctx.error(
                path,
                f"Invalid attribute path {raw!r}: segments are separated by '.', non-empty, at most "
                f"{MAX_KEY_LENGTH} characters, without quotes, backslashes or control characters",
            )
            return None
    return parts


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return f"Strings must be at most {MAX_STRING} characters" if len(value) > MAX_STRING else None
    if isinstance(value, int):
        return "Number out of range" if abs(value) > MAX_INT else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "Numbers must be finite"
    return "Must be a string, number, boolean or null"


def _check_value(op: FilterOp, has_value: bool, value: object, path: str, ctx: _Parse) -> bool:
    vpath = f"{path}.value"
    if op is FilterOp.EXISTS:
        if value is not None and not isinstance(value, bool):
            ctx.error(vpath, "EXISTS takes true (the default) or false")
            return False
        return True
    if not has_value:
        ctx.error(vpath, f"{op.value} needs a value")
        return False
    if op is FilterOp.IN:
        if not isinstance(value, list):
            ctx.error(vpath, "IN needs a list of values")
            return False
        if not value or len(value) > MAX_IN_VALUES:
            ctx.error(vpath, f"IN needs 1 to {MAX_IN_VALUES} values")
            return False
        for i, item in enumerate(value):
            problem = _scalar_problem(item)
            if problem:
                ctx.error(f"{vpath}[{i}]", problem)
                return False
        return True
    if op in ORDERING and not (is_number(value) or isinstance(value, str)):
        ctx.error(vpath, f"{op.value} compares numbers or strings")
        return False
    problem = _scalar_problem(value)
    if problem:
        ctx.error(vpath, f"{op.value}: {problem}")
        return False
    if op is FilterOp.CONTAINS and (value is None or value == ""):
        ctx.error(vpath, "CONTAINS needs a non-empty string, a number or a boolean")
        return False
    return True


def _parse_attribute(raw: object, path: str, ctx: _Parse) -> AttributeCondition | None:
    obj = _object(raw, path, ctx)
    if obj is None or not _keys(obj, ["path", "op", "value"], path, ctx):
        return None
    attr_path = _parse_path(obj.get("path"), f"{path}.path", ctx)
    if obj.get("op") is None:
        ctx.error(f"{path}.op", "op is required")
        return None
    try:
        op = FilterOp(obj["op"])
    except ValueError:
        ctx.error(f"{path}.op", f"Unknown operator {obj['op']!r}")
        return None
    value = obj.get("value")
    if not _check_value(op, "value" in obj, value, path, ctx) or attr_path is None:
        return None
    if op is FilterOp.EXISTS:
        value = True if value is None else value
    elif isinstance(value, list):
        # Deduplicated by JSON form, which keeps true and 1 apart (Python's == does not).
        value = list({json.dumps(v): v for v in value}.values())
    return AttributeCondition(path=attr_path, op=op, value=value)


def _parse_id(raw: object, path: str, ctx: _Parse) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw <= MAX_INT:
        return raw
    ctx.error(path, "Must be an id")
    return None


def _parse_list(raw: object, path: str, ctx: _Parse) -> ListCondition | None:
    obj = _object(raw, path, ctx)
    if obj is None or not _keys(obj, ["listId", "status"], path, ctx):
        return None
    list_id = _parse_id(obj.get("listId"), f"{path}.listId", ctx)
    status = None
    if obj.get("status") is not None:
        try:
            status = SubscriptionStatus(obj["status"])
        except ValueError:
            ctx.error(f"{path}.status", f"Unknown subscription status {obj['status']!r}")
            return None
    return ListCondition(list_id=list_id, status=status) if list_id is not None else None


def _parse_engagement(raw: object, path: str, ctx: _Parse) -> EngagementCondition | None:
    obj = _object(raw, path, ctx)
    allowed = ["event", "campaignId", "withinDays", *(["flowStep"] if ctx.flow_steps else [])]
    if obj is None or not _keys(obj, allowed, path, ctx):
        return None
    try:
        event = EngagementEvent(str(obj.get("event")))
    except ValueError:
        ctx.error(f"{path}.event", "Must be OPENED, CLICKED or RECEIVED")
        return None
    campaign_id = None
    if obj.get("campaignId") is not None:
        campaign_id = _parse_id(obj["campaignId"], f"{path}.campaignId", ctx)
        if campaign_id is None:
            return None
    days = obj.get("withinDays")
    if days is not None and (
        not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= MAX_WITHIN_DAYS
    ):
        ctx.error(f"{path}.withinDays", f"Must be a whole number of days from 1 to {MAX_WITHIN_DAYS}")
        return None
    step = obj.get("flowStep")
    if step is not None:
        if event is EngagementEvent.RECEIVED or not isinstance(step, str) or campaign_id is not None:
            ctx.error(f"{path}.flowStep", "flowStep asks whether a step's message was OPENED or CLICKED")
            return None
    return EngagementCondition(event=event, campaign_id=campaign_id, within_days=days, flow_step=step)


def _parse_group(raw: object, path: str, depth: int, ctx: _Parse) -> tuple[SubscriberFilter, ...] | None:
    if not isinstance(raw, list) or not raw:
        ctx.error(path, "Must be a non-empty list of filters")
        return None
    children = [_parse_node(item, f"{path}[{i}]", depth + 1, ctx) for i, item in enumerate(raw)]
    kept = [c for c in children if c is not None]
    return tuple(kept) if len(kept) == len(children) else None


def _parse_node(raw: object, path: str, depth: int, ctx: _Parse) -> SubscriberFilter | None:
    if depth > MAX_DEPTH:
        ctx.error(path, f"Filters may nest at most {MAX_DEPTH} levels")
        return None
    obj = _object(raw, path, ctx)
    if obj is None or not _keys(obj, list(NODE_KEYS), path, ctx):
        return None
    given = {k: v for k, v in obj.items() if v is not None}
    ctx.conditions += sum(1 for k in given if k not in ("and", "or", "not"))
    parts: dict[str, Any] = {}
    ok = True
    parsers = {
        "email": _parse_string_match,
        "name": _parse_string_match,
        "createdAt": _parse_date_range,
        "attribute": _parse_attribute,
        "list": _parse_list,
        "engagement": _parse_engagement,
    }
    attrs = {"createdAt": "created_at", "list": "in_list"}
    for key, parse in parsers.items():
        if key in given:
            parsed = parse(given[key], f"{path}.{key}", ctx)
            ok = ok and parsed is not None
            parts[attrs.get(key, key)] = parsed
    if "status" in given:
        try:
            parts["status"] = SubscriberStatus(given["status"])
        except ValueError:
            ctx.error(f"{path}.status", f"Unknown subscriber status {given['status']!r}")
            ok = False
    if "and" in given:
        group = _parse_group(given["and"], f"{path}.and", depth, ctx)
        ok = ok and group is not None
        parts["all_of"] = group or ()
    if "or" in given:
        group = _parse_group(given["or"], f"{path}.or", depth, ctx)
        ok = ok and group is not None
        parts["any_of"] = group
    if "not" in given:
        child = _parse_node(given["not"], f"{path}.not", depth + 1, ctx)
        ok = ok and child is not None
        parts["negated"] = child
    return SubscriberFilter(**parts) if ok else None


def parse_filter(raw: object, field: str = "filter", *, flow_steps: bool = False) -> SubscriberFilter:
    """Validate a filter in its JSON form; every problem is reported with its path, code INVALID_FILTER.
    ``flow_steps``: a flow's condition, which may name the flow's own steps (engagement.flowStep)."""
    ctx = _Parse(flow_steps=flow_steps)
    parsed = _parse_node(raw, field, 1, ctx)
    if ctx.conditions > MAX_CONDITIONS:
        ctx.error(field, f"At most {MAX_CONDITIONS} conditions per filter (found {ctx.conditions})")
    raise_if(ctx.errors)
    assert parsed is not None
    return parsed


# --- references -------------------------------------------------------------------------------------------


async def check_references(session: AsyncSession, f: SubscriberFilter, field: str = "filter") -> None:
    """Lists and campaigns the filter names must exist (a filter saved earlier may outlive them)."""
    lists: dict[int, list[str]] = {}
    campaigns: dict[int, list[str]] = {}
    for path, node in walk(f, field):
        if node.in_list is not None:
            lists.setdefault(node.in_list.list_id, []).append(f"{path}.list.listId")
        if node.engagement is not None and node.engagement.campaign_id is not None:
            campaigns.setdefault(node.engagement.campaign_id, []).append(f"{path}.engagement.campaignId")
    errors: list[FieldError] = []
    if lists:
        found = set(
            (await session.execute(select(MailingList.id).where(MailingList.id.in_(lists)))).scalars()
        )
        for lid in sorted(set(lists) - found):
            errors += [FieldError(p, "List not found", ErrorCode.LIST_NOT_FOUND) for p in lists[lid]]
    if campaigns:
        stmt = select(Campaign.id).where(Campaign.id.in_(campaigns))
        found = set((await session.execute(stmt)).scalars())
        for cid in sorted(set(campaigns) - found):
            errors += [
                FieldError(p, "Campaign not found", ErrorCode.CAMPAIGN_NOT_FOUND) for p in campaigns[cid]
            ]
    raise_if(errors)


async def validate_filter(session: AsyncSession, raw: object, field: str = "filter") -> SubscriberFilter:
    spec = parse_filter(raw, field)
    await check_references(session, spec, field)
    return spec
