"""Query depth, alias and token limits, and the `first` cap: refused with GraphQL errors, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from emailkit.app import create_app
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.graphql import GQL, data


@pytest.fixture
async def strict(runtime: Runtime, admin_key: str) -> AsyncIterator[Any]:
    """A client for an app configured with small limits, to show they come from the settings."""
    settings = Settings(
        database_url=runtime.db.url,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        max_query_depth=2,
        max_aliases=2,
        max_query_tokens=60,
    )
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:

        async def run(query: str) -> httpx.Response:
            return await c.post(
                "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {admin_key}"}
            )

        yield run


def refused(resp: httpx.Response, fragment: str) -> None:
    assert resp.status_code < 500, resp.text
    body = resp.json()
    assert body.get("data") is None, body
    messages = " ".join(e["message"] for e in body["errors"])
    assert fragment in messages.lower(), messages


async def test_depth_limit(strict: Any) -> None:
    assert (await strict("{ lists { totalCount } }")).json()["data"] == {"lists": {"totalCount": 0}}
    refused(await strict("{ lists { edges { node { name } } } }"), "depth")


async def test_depth_limit_sees_through_fragments(strict: Any) -> None:
    query = """
    query { lists { ...E } }
    fragment E on MailingListConnection { edges { ...N } }
    fragment N on MailingListEdge { node { name } }
    """
    refused(await strict(query), "depth")


async def test_alias_limit(strict: Any) -> None:
    assert (await strict("{ a: viewer { name } b: viewer { role } }")).status_code == 200
    refused(await strict("{ a: viewer { name } b: viewer { name } c: viewer { name } }"), "alias")


async def test_token_limit(strict: Any) -> None:
    refused(await strict("{ viewer { " + "name " * 80 + "} }"), "token")


async def test_default_limits_refuse_abusive_queries(gql: GQL) -> None:
    many_aliases = "{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(31)) + " }"
    body = await gql(many_aliases)
    assert body.get("data") is None and "alias" in body["errors"][0]["message"].lower()

    many_tokens = "{ viewer { " + "name " * 3100 + "} }"
    body = await gql(many_tokens)
    assert body.get("data") is None and "token" in body["errors"][0]["message"].lower()

    # A realistic query stays well inside the defaults.
    aliased = "{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(30)) + " }"
    assert len(data(await gql(aliased))) == 30


@pytest.mark.parametrize("first", [251, 10_000, -1])
async def test_first_out_of_range(gql: GQL, first: int) -> None:
    for field in ("lists", "apiKeys"):
        body = await gql(f"{{ {field}(first: {first}) {{ totalCount }} }}")
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
        assert "250" in body["errors"][0]["message"]


async def test_first_at_the_cap_is_accepted(gql: GQL) -> None:
    out = data(await gql("{ lists(first: 250) { totalCount } apiKeys(first: 250) { totalCount } }"))
    assert out == {"lists": {"totalCount": 0}, "apiKeys": {"totalCount": 1}}


async def test_invalid_cursor_is_an_error_not_a_500(gql: GQL) -> None:
    body = await gql('{ apiKeys(first: 1, after: "%%%") { totalCount } }')
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INVALID_CURSOR"
