"""createApiKey / revokeApiKey / apiKeys."""

from __future__ import annotations

from typing import Any

import httpx

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.schema.relay import to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data

CREATE = """
mutation($i: CreateApiKeyInput!) {
  createApiKey(input: $i) {
    apiKey { id name role prefix createdAt lastUsedAt revokedAt }
    key
    userErrors { field message code }
  }
}
"""
REVOKE = """
mutation($i: RevokeApiKeyInput!) {
  revokeApiKey(input: $i) { apiKey { id name revokedAt } userErrors { field code } }
}
"""
LIST = """
query($first: Int!, $after: String) {
  apiKeys(first: $first, after: $after) {
    totalCount
    edges { cursor node { id name role prefix revokedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


async def create(gql: GQL, name: str, role: str = "EDITOR") -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": {"name": name, "role": role}}))["createApiKey"]
    return out


async def test_create_returns_the_key_once(gql: GQL, client: httpx.AsyncClient) -> None:
    out = await create(gql, "  deploy bot ", "EDITOR")
    assert out["userErrors"] == []
    key = out["key"]
    api_key = out["apiKey"]
    assert api_key["name"] == "deploy bot"
    assert api_key["role"] == "EDITOR"
    assert key.startswith(api_key["prefix"]) and len(api_key["prefix"]) < len(key)
    assert api_key["createdAt"] and api_key["lastUsedAt"] is None and api_key["revokedAt"] is None

    me = await client.post(
        "/graphql", json={"query": "{ viewer { name role } }"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert me.json()["data"]["viewer"] == {"name": "deploy bot", "role": "EDITOR"}

    # The listing never exposes the key itself.
    listed = data(await gql(LIST, {"first": 10}))["apiKeys"]
    assert key not in str(listed)


async def test_each_key_is_different(gql: GQL) -> None:
    first = await create(gql, "a")
    second = await create(gql, "a")
    assert first["key"] != second["key"]
    assert first["apiKey"]["id"] != second["apiKey"]["id"]


async def test_blank_or_long_name_is_a_user_error(gql: GQL) -> None:
    out = await create(gql, "   ")
    assert out["apiKey"] is None and out["key"] is None
    assert out["userErrors"] == [{"field": "name", "message": "Name is required", "code": "REQUIRED"}]
    out = await create(gql, "x" * 256)
    assert [e["code"] for e in out["userErrors"]] == ["TOO_LONG"]
    assert data(await gql(LIST, {"first": 10}))["apiKeys"]["totalCount"] == 1  # only the fixture's key


async def test_unknown_role_is_a_graphql_validation_error(gql: GQL) -> None:
    body = await gql(CREATE, {"i": {"name": "x", "role": "ROOT"}})
    assert body["data"] is None
    assert "ROOT" in body["errors"][0]["message"]


async def test_list_pages_and_shows_revoked(gql: GQL) -> None:
    made = [await create(gql, f"k{i}") for i in range(4)]
    data(await gql(REVOKE, {"i": {"id": made[1]["apiKey"]["id"]}}))

    page1 = data(await gql(LIST, {"first": 3}))["apiKeys"]
    assert page1["totalCount"] == 5
    assert [e["node"]["name"] for e in page1["edges"]] == ["admin", "k0", "k1"]
    assert page1["edges"][2]["node"]["revokedAt"] is not None
    assert page1["pageInfo"]["hasNextPage"] is True
    page2 = data(await gql(LIST, {"first": 3, "after": page1["pageInfo"]["endCursor"]}))["apiKeys"]
    assert [e["node"]["name"] for e in page2["edges"]] == ["k2", "k3"]
    assert page2["pageInfo"]["hasNextPage"] is False


async def test_revoke_is_idempotent_and_checks_the_id(gql: GQL) -> None:
    made = await create(gql, "short-lived")
    gid = made["apiKey"]["id"]
    first = data(await gql(REVOKE, {"i": {"id": gid}}))["revokeApiKey"]
    assert first["userErrors"] == [] and first["apiKey"]["revokedAt"] is not None
    again = data(await gql(REVOKE, {"i": {"id": gid}}))["revokeApiKey"]
    assert again == {"apiKey": first["apiKey"], "userErrors": []}

    missing = data(await gql(REVOKE, {"i": {"id": to_global_id("ApiKey", 999_999)}}))["revokeApiKey"]
    assert missing == {"apiKey": None, "userErrors": [{"field": "id", "code": "NOT_FOUND"}]}
    # Another type's id is not an API key id.
    wrong = data(await gql(REVOKE, {"i": {"id": to_global_id("MailingList", 1)}}))["revokeApiKey"]
    assert wrong == {"apiKey": None, "userErrors": [{"field": "id", "code": "INVALID_ID"}]}


async def test_admin_may_revoke_its_own_key(gql: GQL, db: Database, client: httpx.AsyncClient) -> None:
    own = await make_key(db, Role.ADMIN, "self")
    listed = data(await gql(LIST, {"first": 10}))["apiKeys"]["edges"]
    own_id = next(e["node"]["id"] for e in listed if e["node"]["name"] == "self")

    out = data(await gql(REVOKE, {"i": {"id": own_id}}, key=own))["revokeApiKey"]
    assert out["userErrors"] == [] and out["apiKey"]["name"] == "self"
    resp = await client.post(
        "/graphql", json={"query": "{ viewer { name } }"}, headers={"Authorization": f"Bearer {own}"}
    )
    assert resp.status_code == 401


async def test_only_admins_manage_keys(gql: GQL, db: Database) -> None:
    target = (await create(gql, "target"))["apiKey"]["id"]
    for role in (Role.EDITOR, Role.VIEWER):
        key = await make_key(db, role, role.value)
        for query, variables in (
            (CREATE, {"i": {"name": "x", "role": "VIEWER"}}),
            (REVOKE, {"i": {"id": target}}),
            (LIST, {"first": 1}),
        ):
            body = await gql(query, variables, key=key)
            assert codes(body) == ["FORBIDDEN"], (role, query)
            assert body["data"] is None
    still = data(await gql(LIST, {"first": 10}))["apiKeys"]["edges"]
    assert next(e["node"] for e in still if e["node"]["id"] == target)["revokedAt"] is None


async def test_node_does_not_disclose_keys(gql: GQL, db: Database) -> None:
    target = (await create(gql, "target"))["apiKey"]["id"]
    viewer = await make_key(db, Role.VIEWER, "v")
    assert data(await gql("query($id: ID!) { node(id: $id) { id } }", {"id": target}, key=viewer)) == {
        "node": None
    }
