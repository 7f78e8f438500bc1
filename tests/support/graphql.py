"""Talking to the GraphQL endpoint in tests: the `GQL` runner type, a runner over any client, `data()`, and
the objects most tests need made through the API first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

GQL = Callable[..., Awaitable[dict[str, Any]]]


def graphql_runner(client: httpx.AsyncClient, default_key: str) -> GQL:
    """Run an operation with `default_key` (or with `key=`); returns the decoded body, asserting HTTP 200."""

    async def run(
        query: str, variables: dict[str, Any] | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        resp = await client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key or default_key}"},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    return run


def data(body: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a response that must have no top-level errors."""
    assert not body.get("errors"), body.get("errors")
    result: dict[str, Any] = body["data"]
    return result


CREATE_LIST = "mutation($i: CreateListInput!) { createList(input: $i) { list { id } userErrors { code } } }"


async def make_list(gql: GQL, name: str, optin: str = "SINGLE") -> str:
    """A list made through `createList`; returns its global id."""
    out = data(await gql(CREATE_LIST, {"i": {"name": name, "optin": optin}}))["createList"]
    assert out["userErrors"] == [], out["userErrors"]
    list_id: str = out["list"]["id"]
    return list_id
