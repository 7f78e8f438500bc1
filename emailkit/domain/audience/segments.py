"""Segments: a typed subscriber filter, its compiler to SQL, and saved (dynamic) segments.

A filter is a tree: each node ANDs the conditions set on it, with ``and`` / ``or`` / ``not`` for groups. Its
canonical form is a JSON object with camelCase keys and internal ids (stored in ``segments.filter``), parsed
into frozen dataclasses and compiled into one SQLAlchemy boolean expression over ``subscribers``. Values are
always bound parameters; nothing is pasted into SQL text.

Every compiled condition is a true boolean, never NULL, so ``not`` means "everyone else": a missing attribute
is simply not equal, not greater, not contained.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of
from emailkit.db.tables.audience import (
    MailingList,
    Segment,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import (
    FINAL_CAMPAIGN_STATUSES,
    Campaign,
    CampaignSegment,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, raise_if, require

MAX_DEPTH = 10
MAX_CONDITIONS = 100
MAX_PATH_SEGMENTS = 10
MAX_KEY_LENGTH = 128
MAX_STRING = 1000
MAX_IN_VALUES = 500
MAX_WITHIN_DAYS = 3650
SAMPLE_SIZE = 10
MAX_SEGMENTS_PER_CAMPAIGN = 50
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


ORDERING = frozenset({FilterOp.GT, FilterOp.GTE, FilterOp.LT, FilterOp.LTE})
EVENT_TYPES = {EngagementEvent.OPENED: EventType.OPEN, EngagementEvent.CLICKED: EventType.CLICK}

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


# --- parsing the canonical JSON form ----------------------------------------------------------------------

NODE_KEYS = frozenset(
    {"and", "or", "not", "email", "name", "status", "createdAt", "attribute", "list", "engagement"}
)
STRING_KEYS = {"eq": "eq", "contains": "contains", "startsWith": "starts_with", "endsWith": "ends_with"}


@dataclass
class _Parse:
    errors: list[FieldError] = field(default_factory=list)
    conditions: int = 0

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message, ErrorCode.INVALID_FILTER))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    if op in ORDERING and not (_is_number(value) or isinstance(value, str)):
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
    if obj is None or not _keys(obj, ["event", "campaignId", "withinDays"], path, ctx):
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
    return EngagementCondition(event=event, campaign_id=campaign_id, within_days=days)


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


def parse_filter(raw: object, field: str = "filter") -> SubscriberFilter:
    """Validate a filter in its JSON form; every problem is reported with its path, code INVALID_FILTER."""
    ctx = _Parse()
    parsed = _parse_node(raw, field, 1, ctx)
    if ctx.conditions > MAX_CONDITIONS:
        ctx.error(field, f"At most {MAX_CONDITIONS} conditions per filter (found {ctx.conditions})")
    raise_if(ctx.errors)
    assert parsed is not None
    return parsed


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
            {"event": e.event.value, "campaignId": e.campaign_id, "withinDays": e.within_days}
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


# --- compiling to SQL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compile:
    dialect: str
    # "Within N days" counts back from here.
    now: datetime
    # Engagement after this instant is ignored (a started campaign's audience is pinned to its start).
    until: datetime | None


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc: Any = value
    for key in reversed(path):
        doc = {key: doc}
    assert isinstance(doc, dict)
    return doc


def _cmp(op: FilterOp, left: Any, right: Any) -> ColumnElement[bool]:
    if op is FilterOp.GT:
        return left > right  # type: ignore[no-any-return]
    if op is FilterOp.GTE:
        return left >= right  # type: ignore[no-any-return]
    if op is FilterOp.LT:
        return left < right  # type: ignore[no-any-return]
    return left <= right  # type: ignore[no-any-return]


def _when(guard: ColumnElement[bool], then: ColumnElement[bool]) -> ColumnElement[bool]:
    # The guard makes the cast/comparison run only on values of the right JSON type.
    return case((guard, then), else_=false())


def _pg_attribute(c: AttributeCondition) -> ColumnElement[bool]:
    doc = type_coerce(Subscriber.attributes, JSONB())
    node = doc[c.path]
    text_value = node.astext
    kind = func.coalesce(func.jsonb_typeof(node), "missing")

    def equals(value: Scalar) -> ColumnElement[bool]:
        # Containment is type-exact (5 never matches "5") and served by the jsonb_path_ops GIN index.
        return doc.contains(_nest(c.path, value))

    value = c.value
    if c.op is FilterOp.EXISTS:
        return kind != "missing" if value else kind == "missing"
    if c.op is FilterOp.EQ:
        return equals(value)
    if c.op is FilterOp.NE:
        return and_(kind != "missing", not_(equals(value)))
    if c.op is FilterOp.IN:
        return or_(*(equals(v) for v in value))
    if c.op is FilterOp.CONTAINS:
        member = doc.contains(_nest(c.path, [value]))
        if isinstance(value, str):
            substring = _when(kind == "string", text_value.icontains(value, autoescape=True))
            return or_(substring, member)
        return member
    if _is_number(value):
        return _when(kind == "number", _cmp(c.op, cast(text_value, Numeric), literal(value, Numeric())))
    # Byte order, as on SQLite, whatever the database's collation.
    return _when(kind == "string", _cmp(c.op, text_value.collate("C"), value))


def _sqlite_paths(path: tuple[str, ...]) -> list[str]:
    """JSON paths for the key path. SQLite matches keys against the stored JSON text without decoding escapes;
    SQLAlchemy's serializer stores non-ASCII characters escaped, other writers may store them as they are,
    so a key with such characters is looked up in both forms."""
    escaped = "$" + "".join(f'."{json.dumps(key)[1:-1]}"' for key in path)
    verbatim = "$" + "".join(f'."{key}"' for key in path)
    return [escaped] if escaped == verbatim else [escaped, verbatim]


SQLITE_NUMBER = ("integer", "real")


def _sqlite_equals(kind: Any, value_expr: Any, value: Scalar) -> ColumnElement[bool]:
    if value is None:
        return kind == "null"  # type: ignore[no-any-return]
    if isinstance(value, bool):
        return kind == ("true" if value else "false")  # type: ignore[no-any-return]
    if isinstance(value, str):
        return _when(kind == "text", value_expr == value)
    return _when(kind.in_(SQLITE_NUMBER), value_expr == value)


def _sqlite_has_item(path: str, value: Scalar) -> ColumnElement[bool]:
    items = func.json_each(Subscriber.attributes, path).table_valued("value", "type")
    if isinstance(value, bool):
        item_match = items.c.type == ("true" if value else "false")
    elif isinstance(value, str):
        item_match = and_(items.c.type == "text", items.c.value == value)
    else:
        item_match = and_(items.c.type.in_(SQLITE_NUMBER), items.c.value == value)
    return exists().select_from(items).where(item_match)


def _sqlite_attribute(c: AttributeCondition) -> ColumnElement[bool]:
    doc = Subscriber.attributes
    paths = _sqlite_paths(c.path)
    kind = func.coalesce(*(func.json_type(doc, p) for p in paths), "missing")
    extracted = [func.json_extract(doc, p) for p in paths]
    value_expr = extracted[0] if len(extracted) == 1 else func.coalesce(*extracted)
    value = c.value
    if c.op is FilterOp.EXISTS:
        return kind != "missing" if value else kind == "missing"
    if c.op is FilterOp.EQ:
        return _sqlite_equals(kind, value_expr, value)
    if c.op is FilterOp.NE:
        return and_(kind != "missing", not_(_sqlite_equals(kind, value_expr, value)))
    if c.op is FilterOp.IN:
        return or_(*(_sqlite_equals(kind, value_expr, v) for v in value))
    if c.op is FilterOp.CONTAINS:
        member = _when(kind == "array", or_(*(_sqlite_has_item(p, value) for p in paths)))
        if isinstance(value, str):
            return or_(_when(kind == "text", value_expr.icontains(value, autoescape=True)), member)
        return member
    if _is_number(value):
        return _when(kind.in_(SQLITE_NUMBER), _cmp(c.op, value_expr, value))
    return _when(kind == "text", _cmp(c.op, value_expr, value))


def _string_match(column: Any, m: StringMatch) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if m.eq is not None:
        out.append(func.lower(column) == func.lower(m.eq))
    if m.contains is not None:
        out.append(column.icontains(m.contains, autoescape=True))
    if m.starts_with is not None:
        out.append(column.istartswith(m.starts_with, autoescape=True))
    if m.ends_with is not None:
        out.append(column.iendswith(m.ends_with, autoescape=True))
    return out


def _engagement(c: EngagementCondition, ctx: _Compile) -> ColumnElement[bool]:
    since = ctx.now - timedelta(days=c.within_days) if c.within_days is not None else None
    if c.event is EngagementEvent.RECEIVED:
        conds: list[ColumnElement[bool]] = [
            Delivery.subscriber_id == Subscriber.id,
            Delivery.status == DeliveryStatus.SENT,
        ]
        if c.campaign_id is not None:
            conds.append(Delivery.campaign_id == c.campaign_id)
        if since is not None:
            conds.append(Delivery.sent_at >= since)
        if ctx.until is not None:
            conds.append(Delivery.sent_at <= ctx.until)
        return exists().where(*conds)
    conds = [Event.subscriber_id == Subscriber.id, Event.type == EVENT_TYPES[c.event]]
    if c.campaign_id is not None:
        conds.append(Event.campaign_id == c.campaign_id)
    if since is not None:
        conds.append(Event.occurred_at >= since)
    if ctx.until is not None:
        conds.append(Event.occurred_at <= ctx.until)
    return exists().where(*conds)


def _list_membership(c: ListCondition) -> ColumnElement[bool]:
    status = (
        Subscription.status == c.status
        if c.status is not None
        else Subscription.status != SubscriptionStatus.UNSUBSCRIBED
    )
    return exists().where(
        Subscription.subscriber_id == Subscriber.id, Subscription.list_id == c.list_id, status
    )


def _compile(f: SubscriberFilter, ctx: _Compile) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if f.email is not None:
        parts += _string_match(Subscriber.email, f.email)
    if f.name is not None:
        parts += _string_match(Subscriber.name, f.name)
    if f.status is not None:
        parts.append(Subscriber.status == f.status)
    if f.created_at is not None:
        if f.created_at.before is not None:
            parts.append(Subscriber.created_at < f.created_at.before)
        if f.created_at.after is not None:
            parts.append(Subscriber.created_at > f.created_at.after)
    if f.attribute is not None:
        attribute = _pg_attribute if ctx.dialect == "postgresql" else _sqlite_attribute
        parts.append(attribute(f.attribute))
    if f.in_list is not None:
        parts.append(_list_membership(f.in_list))
    if f.engagement is not None:
        parts.append(_engagement(f.engagement, ctx))
    parts += [_compile(child, ctx) for child in f.all_of]
    if f.any_of is not None:
        parts.append(or_(*(_compile(child, ctx) for child in f.any_of)))
    if f.negated is not None:
        parts.append(not_(_compile(f.negated, ctx)))
    if not parts:
        return true()
    return parts[0] if len(parts) == 1 else and_(*parts)


def compile_filter(
    f: SubscriberFilter, dialect: str, *, now: datetime, until: datetime | None = None
) -> ColumnElement[bool]:
    """A boolean expression over ``subscribers`` (never NULL) for ``dialect`` ("postgresql" or "sqlite")."""
    return _compile(f, _Compile(dialect=dialect, now=now, until=until))


# --- using a filter ---------------------------------------------------------------------------------------


@dataclass
class Preview:
    count: int
    sample: list[Subscriber]


async def count_matching(
    session: AsyncSession, spec: SubscriberFilter, *, now: datetime | None = None
) -> int:
    clause = compile_filter(spec, dialect_of(session), now=now or utcnow())
    stmt = select(func.count()).select_from(Subscriber).where(clause)
    return int((await session.execute(stmt)).scalar_one())


async def preview(
    session: AsyncSession, raw: object, *, now: datetime | None = None, sample_size: int = SAMPLE_SIZE
) -> Preview:
    """How many subscribers match right now, and the first few of them (lowest ids)."""
    spec = await validate_filter(session, raw)
    now = now or utcnow()
    clause = compile_filter(spec, dialect_of(session), now=now)
    count = (await session.execute(select(func.count()).select_from(Subscriber).where(clause))).scalar_one()
    sample_stmt = select(Subscriber).where(clause).order_by(Subscriber.id).limit(sample_size)
    sample = list((await session.execute(sample_stmt)).scalars())
    return Preview(count=int(count), sample=sample)


async def find_subscribers(
    session: AsyncSession, raw: object, *, first: int, after: int | None, now: datetime | None = None
) -> Page[Subscriber]:
    """Subscribers matching the filter, oldest first."""
    spec = await validate_filter(session, raw)
    clause = compile_filter(spec, dialect_of(session), now=now or utcnow())
    return await keyset_page(
        session, select(Subscriber).where(clause), Subscriber.id, first=first, after=after
    )


def matching_any(
    definitions: Sequence[dict[str, Any]], dialect: str, *, as_of: datetime
) -> ColumnElement[bool] | None:
    """Subscribers matching any of the given stored filters, evaluated as of a campaign's start."""
    clauses = [compile_filter(parse_filter(d), dialect, now=as_of, until=as_of) for d in definitions]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else or_(*clauses)


# --- saved segments ---------------------------------------------------------------------------------------


@dataclass
class SegmentInput:
    """On update, None means "leave as it is"; ``filter`` is the JSON form."""

    name: str | None = None
    description: str | None = None
    filter: dict[str, Any] | None = None


def _validate_fields(data: SegmentInput, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
    check_length(errors, "name", data.name, 255)
    check_length(errors, "description", data.description, 10_000)
    if creating and data.filter is None:
        errors.append(FieldError("filter", "Filter is required", ErrorCode.REQUIRED))
    return errors


async def _checked(session: AsyncSession, data: SegmentInput, *, creating: bool) -> dict[str, Any] | None:
    """Every problem with the input at once; returns the filter in canonical form when one was given."""
    errors = _validate_fields(data, creating=creating)
    canonical = None
    if data.filter is not None:
        try:
            canonical = filter_to_dict(await validate_filter(session, data.filter))
        except DomainError as exc:
            errors += exc.errors
    raise_if(errors)
    return canonical


async def create_segment(session: AsyncSession, data: SegmentInput) -> Segment:
    canonical = await _checked(session, data, creating=True)
    assert data.name is not None and canonical is not None
    row = Segment(name=data.name.strip(), description=data.description or "", filter=canonical)
    session.add(row)
    await session.flush()
    return row


async def get_segment(session: AsyncSession, segment_id: int, *, for_update: bool = False) -> Segment:
    row = await session.get(Segment, segment_id, with_for_update=for_update)
    if row is None:
        raise NotFound("Segment", code=ErrorCode.SEGMENT_NOT_FOUND)
    return row


async def update_segment(session: AsyncSession, segment_id: int, data: SegmentInput) -> Segment:
    canonical = await _checked(session, data, creating=False)
    row = await get_segment(session, segment_id)
    if data.name is not None:
        row.name = data.name.strip()
    if data.description is not None:
        row.description = data.description
    if canonical is not None:
        row.filter = canonical
    await session.flush()
    return row


async def delete_segment(session: AsyncSession, segment_id: int) -> Segment:
    # The row lock orders this against a campaign being pointed at the segment at the same time.
    row = await get_segment(session, segment_id, for_update=True)
    users = (
        select(Campaign.name)
        .join(CampaignSegment, CampaignSegment.campaign_id == Campaign.id)
        .where(CampaignSegment.segment_id == segment_id, Campaign.status.not_in(FINAL_CAMPAIGN_STATUSES))
        .order_by(Campaign.id)
    )
    names = list((await session.execute(users)).scalars())
    if names:
        shown = ", ".join(repr(n) for n in names[:3]) + (" ..." if len(names) > 3 else "")
        raise DomainError.single(
            ErrorCode.IN_USE, f"Segment is targeted by {len(names)} unfinished campaign(s): {shown}", "id"
        )
    await session.delete(row)
    await session.flush()
    return row


async def find_segments(session: AsyncSession, *, first: int, after: int | None) -> Page[Segment]:
    return await keyset_page(session, select(Segment), Segment.id, first=first, after=after)


async def segments_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Segment]:
    rows = (await session.execute(select(Segment).where(Segment.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def subscriber_counts(session: AsyncSession, ids: Sequence[int]) -> dict[int, int]:
    """Current matches per segment; one COUNT per segment (each filter is its own query plan)."""
    now = utcnow()
    counts: dict[int, int] = {}
    for sid, raw in (
        await session.execute(select(Segment.id, Segment.filter).where(Segment.id.in_(ids)))
    ).all():
        counts[sid] = await count_matching(session, parse_filter(raw), now=now)
    return counts


# --- campaigns targeting segments -------------------------------------------------------------------------


async def require_segments(session: AsyncSession, ids: Sequence[int], field: str = "segmentIds") -> None:
    wanted = set(ids)
    if len(wanted) > MAX_SEGMENTS_PER_CAMPAIGN:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, f"At most {MAX_SEGMENTS_PER_CAMPAIGN} segments", field
        )
    if not wanted:
        return
    found = set((await session.execute(select(Segment.id).where(Segment.id.in_(wanted)))).scalars())
    missing = len(wanted - found)
    if missing:
        raise DomainError.single(
            ErrorCode.SEGMENT_NOT_FOUND, f"{missing} of the given segments do not exist", field
        )


async def replace_campaign_segments(session: AsyncSession, campaign_id: int, ids: Sequence[int]) -> None:
    wanted = set(ids)
    current = set(
        (
            await session.execute(
                select(CampaignSegment.segment_id).where(CampaignSegment.campaign_id == campaign_id)
            )
        ).scalars()
    )
    if current - wanted:
        await session.execute(
            delete(CampaignSegment).where(
                CampaignSegment.campaign_id == campaign_id, CampaignSegment.segment_id.in_(current - wanted)
            )
        )
    new = sorted(wanted - current)
    if new:
        await session.execute(
            insert(CampaignSegment), [{"campaign_id": campaign_id, "segment_id": i} for i in new]
        )


async def segment_ids_by_campaign(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(CampaignSegment.campaign_id, CampaignSegment.segment_id)
        .where(CampaignSegment.campaign_id.in_(campaign_ids))
        .order_by(CampaignSegment.campaign_id, CampaignSegment.segment_id)
    )
    out: dict[int, list[int]] = {cid: [] for cid in campaign_ids}
    for cid, sid in (await session.execute(stmt)).all():
        out[cid].append(sid)
    return out


async def record_definitions(session: AsyncSession, campaign_id: int) -> None:
    """Copy each target segment's current filter onto the campaign (at start; later edits no longer apply)."""
    current = select(Segment.filter).where(Segment.id == CampaignSegment.segment_id).scalar_subquery()
    await session.execute(
        update(CampaignSegment)
        .where(CampaignSegment.campaign_id == campaign_id)
        .values(definition=current)
        .execution_options(synchronize_session=False)
    )


async def campaign_definitions(session: AsyncSession, campaign_id: int) -> list[dict[str, Any]]:
    """The filters a campaign's audience uses: recorded at start, else (not started yet) the live ones."""
    stmt = (
        select(func.coalesce(CampaignSegment.definition, Segment.filter))
        .join(Segment, Segment.id == CampaignSegment.segment_id)
        .where(CampaignSegment.campaign_id == campaign_id)
        .order_by(CampaignSegment.segment_id)
    )
    return [dict(d) for d in (await session.execute(stmt)).scalars()]
