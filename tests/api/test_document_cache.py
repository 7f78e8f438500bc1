"""Parsed and validated documents are kept per query text: a repeated operation is parsed and validated once,
answers exactly as the first time, and every limit still refuses what it refused, whatever the variables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import strawberry.schema.schema as strawberry_schema
from graphql import parse

import emailkit.schema.documents as documents
from emailkit.app import create_app
from emailkit.boundedcache import BoundedLRU
from emailkit.domain.runtime import Runtime
from emailkit.schema.documents import DocumentCache
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.graphql import GQL, data, graphql_runner

PAGE = """query Page($first: Int!) {
  subscribers(first: $first) { edges { cursor node { id email name status attributes
    subscriptions { status list { id name } } } } pageInfo { hasNextPage endCursor } }
}"""

Post = Callable[..., Any]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often graphql-core's parser and validation run."""
    calls = {"parse": 0, "validate": 0}
    real_parse, real_validate = strawberry_schema.parse, documents.validate_document

    def counting_parse(*args: Any, **kwargs: Any) -> Any:
        calls["parse"] += 1
        return real_parse(*args, **kwargs)

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        calls["validate"] += 1
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "parse", counting_parse)
    monkeypatch.setattr(documents, "validate_document", counting_validate)
    return calls


@pytest.fixture
async def strict(runtime: Runtime, admin_key: str) -> AsyncIterator[Post]:
    """An app with small limits: depth 4, 2 aliases, 60 tokens, a cost budget of 300."""
    settings = Settings(
        database_url=runtime.db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url="http://testserver",
        max_query_depth=4,
        max_aliases=2,
        max_query_tokens=60,
        query_cost_limit=300,
    )
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield graphql_runner(c, admin_key)


def codes(body: dict[str, Any]) -> list[str | None]:
    assert body.get("data") is None, body
    return [e.get("extensions", {}).get("code") for e in body["errors"]]


def messages(body: dict[str, Any]) -> str:
    assert body.get("data") is None, body
    return " ".join(e["message"] for e in body["errors"]).lower()


async def test_a_repeated_query_is_parsed_and_validated_once_and_answers_the_same(
    gql: GQL, counted: dict[str, int]
) -> None:
    for i in range(3):
        await gql(
            "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
            {"i": {"email": f"r{i}@example.com", "name": f"R {i}", "attributes": {"n": i, "tags": ["a"]}}},
        )
    counted.update(parse=0, validate=0)
    first = await gql(PAGE, {"first": 2})
    assert len(data(first)["subscribers"]["edges"]) == 2
    assert [await gql(PAGE, {"first": 2}) for _ in range(3)] == [first] * 3
    assert counted == {"parse": 1, "validate": 1}
    # Other variables, same document: still parsed and validated once, and the answer follows the variables.
    assert len(data(await gql(PAGE, {"first": 3}))["subscribers"]["edges"]) == 3
    assert counted == {"parse": 1, "validate": 1}


async def test_an_invalid_query_is_refused_the_same_way_every_time(gql: GQL) -> None:
    query = "{ viewer { name nosuchfield } }"
    answers = [await gql(query) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    assert "nosuchfield" in messages(answers[0])
    assert answers[0]["errors"][0]["locations"] == [{"line": 1, "column": 17}]


async def test_depth_alias_and_token_limits_refuse_the_second_time_too(strict: Post) -> None:
    deep = "query($n: Int!) { lists(first: $n) { edges { node { subscribers { edges { node { id } } } } } } }"
    aliases = "{ a: viewer { name } b: viewer { name } c: viewer { name } }"
    tokens = "{ viewer { " + "name " * 80 + "} }"
    for _ in range(2):
        for n in (1, 5):
            assert "depth" in messages(await strict(deep, {"n": n}))
        assert "alias" in messages(await strict(aliases))
        assert "token" in messages(await strict(tokens))
        # What is inside the limits is still answered, from the cache the second time.
        assert data(await strict("{ a: viewer { name } b: viewer { role } }"))["a"]["name"] == "admin"


async def test_the_cost_budget_follows_the_variables_of_each_request(strict: Post) -> None:
    query = "query($first: Int!) { lists(first: $first) { edges { node { id name } } } }"
    # 2 + first x (1 + 2): 26 for 8, 752 for 250.
    for _ in range(2):
        assert data(await strict(query, {"first": 8})) == {"lists": {"edges": []}}
        assert codes(await strict(query, {"first": 250})) == ["QUERY_TOO_COMPLEX"]
    skipped = "query($big: Boolean!) { viewer { name } lists(first: 250) @include(if: $big) { edges { node { id } } } }"
    for _ in range(2):
        assert data(await strict(skipped, {"big": False})) == {"viewer": {"name": "admin"}}
        assert codes(await strict(skipped, {"big": True})) == ["QUERY_TOO_COMPLEX"]


async def test_unstorable_text_is_refused_every_time_in_literals_and_in_variables(gql: GQL) -> None:
    literal = '{ lists(search: "a\\u0000") { totalCount } }'
    variable = "query($s: String) { lists(search: $s) { totalCount } }"
    for _ in range(2):
        assert codes(await gql(literal)) == ["INVALID_TEXT"]
        assert codes(await gql(variable, {"s": "a\x00"})) == ["INVALID_TEXT"]
        assert data(await gql(variable, {"s": "a"})) == {"lists": {"totalCount": 0}}


def test_the_cache_is_bounded_in_entries_and_characters() -> None:
    cache = DocumentCache(max_entries=2, max_chars=100, max_query_chars=60)
    texts = ["{ a }", "{ b }", "{ c }"]
    for text in texts:
        cache.keep(text, parse(text))
    assert len(cache) == 2 and cache.get("{ a }") is None and cache.get("{ c }") is not None
    long = "{ " + "x " * 40 + "}"
    kept = cache.keep(long, parse(long))
    assert kept.document is not None and cache.get(long) is None  # checked, but not kept

    lru: BoundedLRU[str, int] = BoundedLRU(max_entries=10, max_weight=10)
    lru.put("a", 1, 4)
    lru.put("b", 2, 4)
    assert lru.get("a") == 1  # now the most recently used
    lru.put("c", 3, 4)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), lru.weight) == (1, None, 3, 8)
    assert not lru.put("d", 4, 11) and lru.get("d") is None
