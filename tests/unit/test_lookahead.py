"""`selects` finds a field below the one being resolved through aliases, fragments and inline fragments."""

from __future__ import annotations

import strawberry

from emailkit.schema.lookahead import selects


@strawberry.type
class Leaf:
    name: str = "leaf"


@strawberry.type
class Branch:
    leaf: Leaf = strawberry.field(default_factory=Leaf)
    other: int = 1


SEEN: list[tuple[bool, bool, bool]] = []


@strawberry.type
class Query:
    @strawberry.field
    def branch(self, info: strawberry.Info) -> Branch:
        SEEN.append((selects(info, "leaf"), selects(info, "leaf", "name"), selects(info, "other", "name")))
        return Branch()


SCHEMA = strawberry.Schema(query=Query)


def seen_for(query: str) -> tuple[bool, bool, bool]:
    SEEN.clear()
    result = SCHEMA.execute_sync(query)
    assert result.errors is None, result.errors
    return SEEN[-1]


def test_a_plain_selection() -> None:
    assert seen_for("{ branch { leaf { name } } }") == (True, True, False)


def test_a_field_not_selected() -> None:
    assert seen_for("{ branch { other } }") == (False, False, False)


def test_aliases_fragments_and_inline_fragments() -> None:
    assert seen_for("{ branch { l: leaf { n: name } } }") == (True, True, False)
    assert seen_for(
        "{ branch { ...B } } fragment B on Branch { leaf { ...L } } fragment L on Leaf { name }"
    ) == (
        True,
        True,
        False,
    )
    assert seen_for("{ branch { ... on Branch { leaf { ... { name } } } } }") == (True, True, False)


def test_a_parent_selected_without_the_child() -> None:
    assert seen_for("{ branch { leaf { __typename } } }") == (True, False, False)
