"""Workspaces through the API: instance keys manage them, X-Emailkit-Workspace picks one, keys stay in theirs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.graphql import GQL, data, make_list

CREATE = """mutation($i: CreateWorkspaceInput!) {
  createWorkspace(input: $i) { workspace { id slug name status quotas { subscribers emailsPerDay } } userErrors { field code } }
}"""
UPDATE = """mutation($i: UpdateWorkspaceInput!) {
  updateWorkspace(input: $i) {
    workspace { slug publicUrl branding { name accentColor } quotas { subscribers emailsPerDay } }
    userErrors { field code }
  }
}"""
ARCHIVE = "mutation($i: ArchiveWorkspaceInput!) { archiveWorkspace(input: $i) { workspace { status archivedAt } userErrors { code } } }"
CREATE_KEY = "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { role } userErrors { field code } } }"
LISTS = "{ lists(first: 50) { edges { node { id name } } } }"
WORKSPACE = "{ workspace { slug } }"


async def post(
    client: httpx.AsyncClient,
    key: str,
    query: str,
    variables: dict[str, Any] | None = None,
    workspace: str | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if workspace is not None:
        headers["X-Emailkit-Workspace"] = workspace
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


@pytest.fixture
async def owner_key(db: Database) -> str:
    return await make_key(db, Role.OWNER, "instance")


async def test_an_instance_key_creates_a_workspace_and_a_key_inside_it(
    client: httpx.AsyncClient, owner_key: str, gql: GQL
) -> None:
    created = (await post(client, owner_key, CREATE, {"i": {"name": "Brand A", "slug": "brand-a"}})).json()
    workspace = data(created)["createWorkspace"]["workspace"]
    assert workspace["slug"] == "brand-a" and workspace["status"] == "ACTIVE"

    made = (
        await post(client, owner_key, CREATE_KEY, {"i": {"name": "a", "role": "ADMIN"}}, workspace["id"])
    ).json()
    key = data(made)["createApiKey"]["key"]
    assert key.startswith("ek_")

    theirs = data(await gql(CREATE_LIST_Q, {"i": {"name": "Brand A news"}}, key=key))["createList"]["list"][
        "id"
    ]
    ours = await make_list(gql, "Default news")
    assert [e["node"]["id"] for e in data(await gql(LISTS, key=key))["lists"]["edges"]] == [theirs]
    assert [e["node"]["id"] for e in data(await gql(LISTS))["lists"]["edges"]] == [ours]
    assert data(await gql(WORKSPACE, key=key))["workspace"] == {"slug": "brand-a"}
    assert data(await gql(WORKSPACE))["workspace"] == {"slug": "default"}
    # The instance key sees whichever workspace it names: by global id, number or slug.
    for reference in (workspace["id"], "brand-a"):
        body = (await post(client, owner_key, LISTS, workspace=reference)).json()
        assert [e["node"]["id"] for e in data(body)["lists"]["edges"]] == [theirs]


CREATE_LIST_Q = "mutation($i: CreateListInput!) { createList(input: $i) { list { id } userErrors { code } } }"


async def test_slugs_are_checked_and_unique(client: httpx.AsyncClient, owner_key: str) -> None:
    first = data((await post(client, owner_key, CREATE, {"i": {"name": "A", "slug": "acme"}})).json())
    assert first["createWorkspace"]["userErrors"] == []
    again = data((await post(client, owner_key, CREATE, {"i": {"name": "B", "slug": "acme"}})).json())
    assert again["createWorkspace"] == {
        "workspace": None,
        "userErrors": [{"field": "slug", "code": "DUPLICATE_SLUG"}],
    }
    for bad in ("Acme", "-acme", "acme_corp", "", "a" * 64):
        out = data((await post(client, owner_key, CREATE, {"i": {"name": "C", "slug": bad}})).json())
        assert out["createWorkspace"]["userErrors"] == [{"field": "slug", "code": "INVALID_SLUG"}], bad


async def test_settings_update_and_null_clears_a_quota(client: httpx.AsyncClient, owner_key: str) -> None:
    created = data(
        (
            await post(client, owner_key, CREATE, {"i": {"name": "A", "slug": "a", "quotaSubscribers": 10}})
        ).json()
    )["createWorkspace"]["workspace"]
    assert created["quotas"] == {"subscribers": 10, "emailsPerDay": None}
    changes = {
        "id": created["id"],
        "publicUrl": "https://news.brand-a.example",
        "branding": {"name": "Brand A", "accentColor": "#1a73e8"},
        "quotaEmailsPerDay": 500,
    }
    out = data((await post(client, owner_key, UPDATE, {"i": changes})).json())["updateWorkspace"]
    assert out["userErrors"] == []
    assert out["workspace"]["quotas"] == {"subscribers": 10, "emailsPerDay": 500}
    assert out["workspace"]["branding"] == {"name": "Brand A", "accentColor": "#1a73e8"}
    cleared = data(
        (await post(client, owner_key, UPDATE, {"i": {"id": created["id"], "quotaSubscribers": None}})).json()
    )
    assert cleared["updateWorkspace"]["workspace"]["quotas"] == {"subscribers": None, "emailsPerDay": 500}
    assert cleared["updateWorkspace"]["workspace"]["publicUrl"] == "https://news.brand-a.example"
    bad = {"id": created["id"], "branding": {"accentColor": "blue"}, "publicUrl": "javascript:alert(1)"}
    errors = data((await post(client, owner_key, UPDATE, {"i": bad})).json())["updateWorkspace"]["userErrors"]
    assert {e["field"] for e in errors} == {"branding", "publicUrl"}


async def test_workspace_keys_cannot_manage_workspaces_or_name_another(
    client: httpx.AsyncClient, db: Database, admin_key: str
) -> None:
    refused = (await post(client, admin_key, CREATE, {"i": {"name": "A", "slug": "a"}})).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    other = await make_workspace(db, "other")
    response = await post(client, admin_key, LISTS, workspace=str(other))
    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Naming its own workspace is fine.
    assert (await post(client, admin_key, LISTS, workspace="default")).status_code == 200


async def test_an_instance_key_naming_no_workspace_gets_workspace_required(
    client: httpx.AsyncClient, owner_key: str
) -> None:
    body = (await post(client, owner_key, LISTS)).json()
    assert body["errors"][0]["extensions"]["code"] == "WORKSPACE_REQUIRED"
    assert "X-Emailkit-Workspace" in body["errors"][0]["message"]
    assert (await post(client, owner_key, LISTS, workspace="no-such-one")).status_code == 403
    assert (await post(client, owner_key, LISTS, workspace="987654")).status_code == 403


async def test_owner_keys_come_only_from_the_command_line(client: httpx.AsyncClient, owner_key: str) -> None:
    out = (await post(client, owner_key, CREATE_KEY, {"i": {"name": "x", "role": "OWNER"}}, "default")).json()
    assert data(out)["createApiKey"]["userErrors"] == [{"field": "role", "code": "FORBIDDEN"}]


async def test_archiving_stops_the_workspace_keys(
    client: httpx.AsyncClient, db: Database, owner_key: str
) -> None:
    workspace_id = await make_workspace(db, "gone")
    key = await make_workspace_key(db, workspace_id)
    assert (await post(client, key, LISTS)).status_code == 200
    from emailkit.globalid import encode

    out = data(
        (await post(client, owner_key, ARCHIVE, {"i": {"id": encode("Workspace", workspace_id)}})).json()
    )
    assert out["archiveWorkspace"]["workspace"]["status"] == "ARCHIVED"
    assert (await post(client, key, LISTS)).status_code == 401
    # The instance key can still read it.
    assert (await post(client, owner_key, LISTS, workspace="gone")).status_code == 200
    default = data((await post(client, owner_key, ARCHIVE, {"i": {"id": encode("Workspace", 1)}})).json())
    assert default["archiveWorkspace"]["userErrors"] == [{"code": "INVALID_STATE"}]


async def test_workspaces_lists_them_for_the_instance_key(
    client: httpx.AsyncClient, db: Database, owner_key: str
) -> None:
    await make_workspace(db, "one")
    body = (
        await post(client, owner_key, "{ workspaces(first: 10) { edges { node { slug } } totalCount } }")
    ).json()
    assert [e["node"]["slug"] for e in data(body)["workspaces"]["edges"]] == ["default", "one"]
