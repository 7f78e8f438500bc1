from __future__ import annotations

from typing import Any

from emailkit.domain.audience.subscriber_fields import (
    ATTRIBUTES_MAX_BYTES,
    ATTRIBUTES_MAX_DEPTH,
    attribute_errors,
)
from emailkit.domain.errors import ErrorCode


def codes(value: object) -> list[ErrorCode]:
    return [e.code for e in attribute_errors(value)]


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth - 1):
        doc = {"k": doc}
    return doc


def test_a_json_object_is_accepted() -> None:
    assert codes({"plan": "pro", "seats": 3, "tags": ["a", {"b": None}], "ok": True, "x": 1.5}) == []
    assert codes({}) == []


def test_anything_but_an_object_is_rejected() -> None:
    for value in (["a"], "text", 3, None, True):
        assert codes(value) == [ErrorCode.INVALID_INPUT], value


def test_keys_must_be_strings_at_every_level() -> None:
    assert codes({1: "x"}) == [ErrorCode.INVALID_INPUT]
    assert codes({"outer": [{"inner": {2: "x"}}]}) == [ErrorCode.INVALID_INPUT]


def test_nesting_is_bounded() -> None:
    assert codes(nested(ATTRIBUTES_MAX_DEPTH)) == []
    assert codes(nested(ATTRIBUTES_MAX_DEPTH + 1)) == [ErrorCode.INVALID_INPUT]
    # Far deeper than the interpreter's recursion limit: rejected, not a crash.
    assert codes(nested(50_000)) == [ErrorCode.INVALID_INPUT]


def test_size_is_bounded_in_serialised_bytes() -> None:
    overhead = len('{"k":""}')
    assert codes({"k": "x" * (ATTRIBUTES_MAX_BYTES - overhead)}) == []
    assert codes({"k": "x" * (ATTRIBUTES_MAX_BYTES - overhead + 1)}) == [ErrorCode.TOO_LONG]
    # Counted in UTF-8 bytes, not characters.
    assert codes({"k": "é" * (ATTRIBUTES_MAX_BYTES // 2)}) == [ErrorCode.TOO_LONG]


def test_values_that_json_cannot_hold_are_rejected() -> None:
    assert codes({"n": float("nan")}) == [ErrorCode.INVALID_INPUT]
    assert codes({"when": object()}) == [ErrorCode.INVALID_INPUT]


def test_the_error_names_the_field() -> None:
    assert [e.field for e in attribute_errors([], field="attributes")] == ["attributes"]
