"""A typed filter compiled into one SQLAlchemy boolean expression over ``subscribers``.

Every compiled condition is a true boolean, never NULL, so ``not`` means "everyone else": a missing attribute
is simply not equal, not greater, not contained. Attribute conditions differ by database: PostgreSQL reads
the JSONB document (containment, served by its GIN index); SQLite reads the JSON text with ``json_type`` and
``json_extract``. Values are always bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from emailkit.db.tables.audience import Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.automation import FlowStepRun
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.domain.audience.segments.filter import (
    AttributeCondition,
    EngagementCondition,
    EngagementEvent,
    FilterOp,
    ListCondition,
    Scalar,
    StringMatch,
    SubscriberFilter,
    is_number,
)
from emailkit.domain.audience.segments.validate import parse_filter

EVENT_TYPES = {EngagementEvent.OPENED: EventType.OPEN, EngagementEvent.CLICKED: EventType.CLICK}


@dataclass(frozen=True)
class _Compile:
    dialect: str
    # "Within N days" counts back from here.
    now: datetime
    # Engagement after this instant is ignored (a started campaign's audience is pinned to its start).
    until: datetime | None
    # A flow's condition: the run's id column, which engagement.flowStep is about.
    run_id: Any = None


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
    if is_number(value):
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
    if is_number(value):
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


def _flow_step_engagement(c: EngagementCondition, ctx: _Compile) -> ColumnElement[bool]:
    if ctx.run_id is None:
        return false()
    seen = FlowStepRun.opened_at if c.event is EngagementEvent.OPENED else FlowStepRun.clicked_at
    return exists().where(
        FlowStepRun.run_id == ctx.run_id, FlowStepRun.step_key == c.flow_step, seen.is_not(None)
    )


def _engagement(c: EngagementCondition, ctx: _Compile) -> ColumnElement[bool]:
    if c.flow_step is not None:
        return _flow_step_engagement(c, ctx)
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


def _conditions(f: SubscriberFilter, ctx: _Compile) -> list[ColumnElement[bool]]:
    """The conditions set on the node itself, its groups aside."""
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
    return parts


def _compile(f: SubscriberFilter, ctx: _Compile) -> ColumnElement[bool]:
    parts = _conditions(f, ctx)
    parts += [_compile(child, ctx) for child in f.all_of]
    if f.any_of is not None:
        parts.append(or_(*(_compile(child, ctx) for child in f.any_of)))
    if f.negated is not None:
        parts.append(not_(_compile(f.negated, ctx)))
    if not parts:
        return true()
    return parts[0] if len(parts) == 1 else and_(*parts)


def compile_filter(
    f: SubscriberFilter,
    dialect: str,
    *,
    now: datetime,
    until: datetime | None = None,
    run_id: Any = None,
) -> ColumnElement[bool]:
    """A boolean expression over ``subscribers`` (never NULL) for ``dialect`` ("postgresql" or "sqlite");
    ``run_id``, in a flow's condition, is the column of the run that engagement.flowStep is about."""
    return _compile(f, _Compile(dialect=dialect, now=now, until=until, run_id=run_id))


def matching_any(
    definitions: Sequence[dict[str, Any]], dialect: str, *, as_of: datetime
) -> ColumnElement[bool] | None:
    """Subscribers matching any of the given stored filters, evaluated as of a campaign's start."""
    clauses = [compile_filter(parse_filter(d), dialect, now=as_of, until=as_of) for d in definitions]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else or_(*clauses)
