"""The segment filter without a database: parsing and its errors, the canonical form, and the SQL it compiles
to on each dialect (values always bound, index-friendly shapes on PostgreSQL). Real rows: tests/api/test_segments_filter.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import create_async_engine

from emailkit.db.tables.audience import Subscriber
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.filter import MAX_DEPTH, filter_to_dict
from emailkit.domain.audience.segments.validate import parse_filter
from emailkit.domain.errors import DomainError

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# The drivers the application runs on (no connection is made).
DIALECTS: dict[str, Dialect] = {
    "postgresql": create_async_engine("postgresql+asyncpg://").dialect,
    "sqlite": create_async_engine("sqlite+aiosqlite://").dialect,
}


def errors_of(raw: object) -> list[tuple[str | None, str, str]]:
    with pytest.raises(DomainError) as caught:
        parse_filter(raw)
    return [(e.field, e.code.value, e.message) for e in caught.value.errors]


def fields_of(raw: object) -> list[str | None]:
    return [field for field, _, _ in errors_of(raw)]


def sql(raw: dict[str, Any], dialect: str, until: datetime | None = None) -> tuple[str, dict[str, Any]]:
    clause = compile_filter(parse_filter(raw), dialect, now=NOW, until=until)
    compiled = select(func.count()).select_from(Subscriber).where(clause).compile(dialect=DIALECTS[dialect])
    return str(compiled), dict(compiled.params)


def attr(path: str, op: str, value: Any = ...) -> dict[str, Any]:
    cond: dict[str, Any] = {"path": path, "op": op}
    if value is not ...:
        cond["value"] = value
    return {"attribute": cond}


# --- canonical form ---------------------------------------------------------------------------------------


def test_canonical_form_round_trips() -> None:
    raw = {
        "and": [
            attr("address.city", "EQ", "Berlin"),
            {"not": {"list": {"listId": 3, "status": "CONFIRMED"}}},
        ],
        "or": [
            {"engagement": {"event": "OPENED", "withinDays": 30}},
            {"email": {"endsWith": "@example.com"}},
        ],
        "status": "ENABLED",
        "createdAt": {"after": "2024-01-01T00:00:00+00:00"},
        "name": {"contains": "ann", "eq": None},
    }
    canonical = filter_to_dict(parse_filter(raw))
    assert canonical == {**raw, "name": {"contains": "ann"}}
    assert filter_to_dict(parse_filter(canonical)) == canonical


def test_values_are_normalised() -> None:
    parsed = parse_filter({"and": [attr("a", "EXISTS"), attr("b", "IN", [1, True, 1, "1", True])]})
    exists, in_ = (c.attribute for c in parsed.all_of)
    assert exists is not None and exists.value is True
    # true and 1 are different JSON values even though Python says True == 1.
    assert in_ is not None and in_.value == [1, True, "1"]
    assert filter_to_dict(parse_filter(attr("a", "EXISTS", False))) == attr("a", "EXISTS", False)
    assert filter_to_dict(parse_filter(attr("a", "EQ", None))) == attr("a", "EQ", None)


def test_empty_filter_matches_everyone() -> None:
    assert sql({}, "postgresql")[0].endswith("WHERE true")
    assert sql({"status": None}, "sqlite")[0].endswith("WHERE 1 = 1")


# --- errors -----------------------------------------------------------------------------------------------


def test_every_problem_is_reported_with_its_path() -> None:
    raw = {
        "and": [{"colour": "red"}, attr("x", "GT", [1])],
        "or": [{"engagement": {"event": "BOUNCED"}}],
        "not": {"createdAt": {"before": "2024-01-01T00:00:00"}},
        "attribute": {"path": "a", "op": "LIKE"},
        "status": "GONE",
    }
    assert sorted(str(f) for f in fields_of(raw)) == [
        "filter.and[0].colour",
        "filter.and[1].attribute.value",
        "filter.attribute.op",
        "filter.not.createdAt.before",
        "filter.or[0].engagement.event",
        "filter.status",
    ]
    assert {code for _, code, _ in errors_of(raw)} == {"INVALID_FILTER"}


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ("city = Berlin", "filter", "Must be an object"),
        ({"and": {"status": "ENABLED"}}, "filter.and", "Must be a non-empty list of filters"),
        ({"and": ["x"]}, "filter.and[0]", "Must be an object"),
        (attr("a", "GT", {"x": 1}), "filter.attribute.value", "GT compares numbers or strings"),
        (attr("a", "LTE", None), "filter.attribute.value", "LTE compares numbers or strings"),
        (attr("a", "IN", "x"), "filter.attribute.value", "IN needs a list of values"),
        (attr("a", "IN", list(range(501))), "filter.attribute.value", "IN needs 1 to 500 values"),
        (attr("a", "EQ", 2**64), "filter.attribute.value", "EQ: Number out of range"),
        (attr("a", "EQ", float("nan")), "filter.attribute.value", "EQ: Numbers must be finite"),
        (
            attr("a", "EQ", "x" * 1001),
            "filter.attribute.value",
            "EQ: Strings must be at most 1000 characters",
        ),
        (
            attr("a", "CONTAINS", None),
            "filter.attribute.value",
            "CONTAINS needs a non-empty string, a number or a boolean",
        ),
        ({"attribute": {"path": "a"}}, "filter.attribute.op", "op is required"),
        (
            {"attribute": {"path": "a", "op": "EQ", "value": 1, "extra": 2}},
            "filter.attribute.extra",
            "Unknown field 'extra'",
        ),
        (attr(".".join("k" * 11), "EXISTS"), "filter.attribute.path", "At most 10 path segments"),
        (attr("a.\x01", "EXISTS"), "filter.attribute.path", None),
        (attr("a\\b", "EXISTS"), "filter.attribute.path", None),
        (attr("k" * 129, "EXISTS"), "filter.attribute.path", None),
        ({"list": {"listId": "7"}}, "filter.list.listId", "Must be an id"),
        (
            {"list": {"listId": 7, "status": "MAYBE"}},
            "filter.list.status",
            "Unknown subscription status 'MAYBE'",
        ),
        ({"engagement": {"event": "OPENED", "withinDays": 3651}}, "filter.engagement.withinDays", None),
        ({"engagement": {"event": "OPENED", "withinDays": 1.5}}, "filter.engagement.withinDays", None),
        ({"engagement": {"event": "OPENED", "withinDays": True}}, "filter.engagement.withinDays", None),
        (
            {"engagement": {"event": "OPENED", "campaignId": 0}},
            "filter.engagement.campaignId",
            "Must be an id",
        ),
        ({"createdAt": {}}, "filter.createdAt", "Give before, after or both"),
        ({"createdAt": {"after": "yesterday"}}, "filter.createdAt.after", "Must be an ISO 8601 date-time"),
        (
            {"createdAt": {"after": "2024-01-01T00:00:00"}},
            "filter.createdAt.after",
            "Needs a timezone offset",
        ),
        ({"email": {"startsWith": 5}}, "filter.email.startsWith", "Must be a non-empty string"),
    ],
)
def test_malformed_filters(raw: object, field: str, message: str | None) -> None:
    [(got_field, code, got_message)] = errors_of(raw)
    assert (got_field, code) == (field, "INVALID_FILTER")
    if message is not None:
        assert got_message == message


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"status": "ENABLED"}
    for _ in range(depth - 1):
        node = {"or": [node]}
    return node


def test_depth_limit() -> None:
    parse_filter(nested(MAX_DEPTH))
    [(field, code, message)] = errors_of(nested(MAX_DEPTH + 1))
    assert field == "filter" + ".or[0]" * MAX_DEPTH
    assert (code, message) == ("INVALID_FILTER", "Filters may nest at most 10 levels")
    # A hostile, very deep input is cut off at the limit, never walked to the bottom.
    assert len(errors_of(nested(5000))) == 1


def test_condition_limit_counts_every_key() -> None:
    fifty = [{"status": "ENABLED", "name": {"eq": "x"}} for _ in range(50)]
    parse_filter({"and": fifty})
    [(field, code, message)] = errors_of({"and": fifty, "email": {"eq": "a"}})
    assert (field, code, message) == (
        "filter",
        "INVALID_FILTER",
        "At most 100 conditions per filter (found 101)",
    )


# --- compiled SQL -----------------------------------------------------------------------------------------


HOSTILE = "x'); DROP TABLE subscribers; --"


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(
    "raw",
    [
        attr("city", "EQ", HOSTILE),
        attr("city", "CONTAINS", HOSTILE),
        attr("city", "GT", HOSTILE),
        attr("city", "IN", [HOSTILE, 1]),
        attr(HOSTILE, "EXISTS"),
        {"email": {"contains": HOSTILE}},
        {"name": {"eq": HOSTILE}},
    ],
)
def test_values_are_always_bound(dialect: str, raw: dict[str, Any]) -> None:
    text, params = sql(raw, dialect)
    assert "DROP" not in text
    assert any(HOSTILE in json.dumps(v, ensure_ascii=False, default=str) for v in params.values())


def test_postgresql_equality_uses_containment() -> None:
    # `@>` on the jsonb_path_ops GIN index: EQ, IN and array CONTAINS never read attributes row by row.
    text, params = sql(attr("address.city", "EQ", "Berlin"), "postgresql")
    assert text.endswith("WHERE subscribers.attributes @> $1::JSONB")
    assert params["param_1"] == {"address": {"city": "Berlin"}}

    text, params = sql(attr("plan", "IN", ["pro", "team"]), "postgresql")
    assert text.count("@>") == 2 and " OR " in text
    assert [params["param_1"], params["param_2"]] == [{"plan": "pro"}, {"plan": "team"}]

    text, params = sql(attr("tags", "CONTAINS", 7), "postgresql")
    assert "@>" in text and "jsonb_typeof" not in text
    assert params["param_1"] == {"tags": [7]}


def test_postgresql_ordering_is_guarded_by_the_json_type() -> None:
    text, params = sql(attr("age", "GTE", 30), "postgresql")
    assert (
        "CASE WHEN (coalesce(jsonb_typeof((subscribers.attributes #> $1)), $2::VARCHAR) = $3::VARCHAR)"
        in text
    )
    assert "THEN CAST((subscribers.attributes #>> $1) AS NUMERIC) >= $4::NUMERIC ELSE false END" in text
    assert params["param_1"] == ("age",) and params["param_2"] == 30
    text, _ = sql(attr("signup", "LT", "2024"), "postgresql")
    assert 'COLLATE "C"' in text


def test_sqlite_paths_match_the_stored_json_text() -> None:
    # Stored JSON escapes non-ASCII characters and SQLite compares keys without decoding them.
    _, params = sql(attr("address.Straße", "EXISTS"), "sqlite")
    assert '$."address"."Stra\\u00dfe"' in params.values()


def test_engagement_windows_and_pinning() -> None:
    text, params = sql({"engagement": {"event": "OPENED", "withinDays": 30}}, "postgresql")
    assert "FROM events" in text and "events.occurred_at >= " in text and "occurred_at <=" not in text
    assert NOW - timedelta(days=30) in params.values()

    start = NOW - timedelta(hours=1)
    text, params = sql({"engagement": {"event": "CLICKED", "campaignId": 9}}, "sqlite", until=start)
    assert "events.campaign_id = ?" in text and "events.occurred_at <= ?" in text
    assert start in params.values()

    text, params = sql({"engagement": {"event": "RECEIVED", "withinDays": 7}}, "postgresql", until=start)
    assert "FROM deliveries" in text and "deliveries.sent_at >= " in text and "deliveries.sent_at <= " in text
    assert "SENT" in params.values()


def test_not_wraps_conditions_that_are_never_null() -> None:
    # NOT over a NULL would drop subscribers who lack the attribute; every condition is a CASE or EXISTS.
    text, _ = sql({"not": attr("age", "GT", 3)}, "sqlite")
    assert text.endswith("ELSE 0 END = 0")
    text, _ = sql({"not": attr("age", "GT", 3)}, "postgresql")
    assert "WHERE NOT CASE WHEN" in text and text.endswith("ELSE false END")
