"""Authentication (API keys over HTTP and WebSocket) and role checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import ApiKey, Role
from emailkit.db.types import utcnow
from emailkit.domain import apikeys
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.graphql import GQL, data

VIEWER_Q = "{ viewer { name role } }"
CREATE_LIST = 'mutation { createList(input: {name: "L"}) { list { name } userErrors { code } } }'
CREATE_KEY = (
    "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) "
    "{ apiKey { id name role } key userErrors { code } } }"
)


async def post(client: httpx.AsyncClient, query: str, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/graphql", json={"query": query}, headers=headers)


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


async def test_missing_key_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    resp = await post(client, VIEWER_Q, {})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ek_thisKeyWasNeverIssued0000000000000000000",
        "Bearer not-even-our-format",
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "ek_keyWithoutScheme",
        "Bearer " + "ek_" + "x" * 500,
    ],
)
async def test_unknown_or_malformed_key_is_401(
    client: httpx.AsyncClient, admin_key: str, header: str
) -> None:
    resp = await post(client, VIEWER_Q, {"Authorization": header})
    assert resp.status_code == 401, resp.text
    assert "www-authenticate" in resp.headers


async def test_key_without_scheme_is_refused_even_when_valid(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    resp = await post(client, VIEWER_Q, {"Authorization": admin_key})
    assert resp.status_code == 401


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient, admin_key: str) -> None:
    resp = await post(client, VIEWER_Q, {"Authorization": f"bearer {admin_key}"})
    assert resp.status_code == 200
    assert resp.json()["data"]["viewer"] == {"name": "admin", "role": "ADMIN"}


async def test_get_query_needs_a_key_even_from_a_browser(client: httpx.AsyncClient) -> None:
    resp = await client.get("/graphql", params={"query": VIEWER_Q}, headers={"Accept": "text/html"})
    assert resp.status_code == 401


async def test_get_query_with_key(client: httpx.AsyncClient, admin_key: str) -> None:
    resp = await client.get(
        "/graphql", params={"query": VIEWER_Q}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert resp.status_code == 200
    assert resp.json()["data"]["viewer"]["role"] == "ADMIN"


async def test_graphiql_page_needs_no_key(client: httpx.AsyncClient) -> None:
    resp = await client.get("/graphql", headers={"Accept": "text/html"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("role", [Role.ADMIN, Role.EDITOR, Role.VIEWER])
async def test_viewer_returns_the_caller(gql: GQL, db: Database, role: Role) -> None:
    key = await make_key(db, role, f"{role.value.lower()} key")
    assert data(await gql(VIEWER_Q, key=key))["viewer"] == {
        "name": f"{role.value.lower()} key",
        "role": role.value,
    }


async def test_viewer_may_query_but_not_mutate(gql: GQL, db: Database) -> None:
    key = await make_key(db, Role.VIEWER, "ro")
    assert data(await gql("{ lists(first: 5) { totalCount } }", key=key))["lists"]["totalCount"] == 0

    body = await gql(CREATE_LIST, key=key)
    assert codes(body) == ["FORBIDDEN"]
    assert body["data"] is None
    # Nothing was written.
    assert data(await gql("{ lists(first: 5) { totalCount } }"))["lists"]["totalCount"] == 0


async def test_editor_may_change_lists_but_not_keys(gql: GQL, db: Database) -> None:
    key = await make_key(db, Role.EDITOR, "ed")
    assert data(await gql(CREATE_LIST, key=key))["createList"] == {
        "list": {"name": "L"},
        "userErrors": [],
    }

    body = await gql(CREATE_KEY, {"i": {"name": "escalate", "role": "ADMIN"}}, key=key)
    assert codes(body) == ["FORBIDDEN"]
    body = await gql("{ apiKeys(first: 5) { totalCount } }", key=key)
    assert codes(body) == ["FORBIDDEN"]
    async with db.session() as session:
        names = set((await session.execute(select(ApiKey.name))).scalars())
    assert names == {"admin", "ed"}


async def test_key_is_stored_hashed(gql: GQL, db: Database) -> None:
    created = data(await gql(CREATE_KEY, {"i": {"name": "ci", "role": "EDITOR"}}))["createApiKey"]
    raw = created["key"]
    assert raw.startswith("ek_") and len(raw) > 40
    async with db.session() as session:
        rows = (await session.execute(select(ApiKey.__table__))).all()
    stored = " ".join(str(v) for row in rows for v in row)
    assert raw not in stored
    # The secret part is not stored in any form short of its hash either.
    assert raw[10:30] not in stored


async def test_revoked_key_is_refused(gql: GQL, client: httpx.AsyncClient) -> None:
    created = data(await gql(CREATE_KEY, {"i": {"name": "temp", "role": "VIEWER"}}))["createApiKey"]
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert (await post(client, VIEWER_Q, headers)).status_code == 200

    revoked = data(
        await gql(
            "mutation($i: RevokeApiKeyInput!) { revokeApiKey(input: $i) { apiKey { revokedAt } userErrors { code } } }",
            {"i": {"id": created["apiKey"]["id"]}},
        )
    )["revokeApiKey"]
    assert revoked["userErrors"] == [] and revoked["apiKey"]["revokedAt"] is not None
    assert (await post(client, VIEWER_Q, headers)).status_code == 401


async def revoke_elsewhere(db: Database, name: str) -> None:
    """What another API process (or the CLI) does: the row changes; this process's cache is not told."""
    async with db.transaction() as session:
        await session.execute(update(ApiKey).where(ApiKey.name == name).values(revoked_at=utcnow()))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The monotonic clock of the key cache, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(apikeys.time, "monotonic", lambda: now[0])
    return now


async def test_a_key_revoked_elsewhere_is_refused_once_the_cache_age_has_passed(
    settings: Settings, runtime: Runtime, db: Database, clock: list[float]
) -> None:
    key = await make_key(db, Role.VIEWER, "cached")
    app = create_app(settings.model_copy(update={"api_key_cache_seconds": 5.0}), runtime)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        assert (await post(c, VIEWER_Q, headers)).status_code == 200
        await revoke_elsewhere(db, "cached")
        # Within the documented bound the verified key is still trusted without reading the database ...
        clock[0] += 4.9
        assert (await post(c, VIEWER_Q, headers)).status_code == 200
        # ... and not a moment past it.
        clock[0] += 0.2
        assert (await post(c, VIEWER_Q, headers)).status_code == 401
        clock[0] += 60
        assert (await post(c, VIEWER_Q, headers)).status_code == 401


async def test_without_the_cache_a_key_revoked_elsewhere_is_refused_at_once(
    settings: Settings, runtime: Runtime, db: Database
) -> None:
    key = await make_key(db, Role.VIEWER, "uncached")
    app = create_app(settings.model_copy(update={"api_key_cache_seconds": 0}), runtime)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        assert (await post(c, VIEWER_Q, headers)).status_code == 200
        await revoke_elsewhere(db, "uncached")
        assert (await post(c, VIEWER_Q, headers)).status_code == 401


async def test_a_revocation_through_this_process_takes_effect_at_once_despite_the_cache(
    gql: GQL, client: httpx.AsyncClient, clock: list[float]
) -> None:
    created = data(await gql(CREATE_KEY, {"i": {"name": "temp", "role": "ADMIN"}}))["createApiKey"]
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert (await post(client, VIEWER_Q, headers)).status_code == 200
    revoke = "mutation($i: RevokeApiKeyInput!) { revokeApiKey(input: $i) { userErrors { code } } }"
    resp = await client.post(
        "/graphql",
        json={"query": revoke, "variables": {"i": {"id": created["apiKey"]["id"]}}},
        headers=headers,
    )
    assert data(resp.json()) == {"revokeApiKey": {"userErrors": []}}
    # The clock has not moved: the cache's age bound is not what refuses it.
    assert (await post(client, VIEWER_Q, headers)).status_code == 401


async def test_last_used_is_recorded(gql: GQL, db: Database, client: httpx.AsyncClient) -> None:
    key = await make_key(db, Role.VIEWER, "fresh")
    async with db.session() as session:
        before = (await session.execute(select(ApiKey.last_used_at).where(ApiKey.name == "fresh"))).scalar()
    assert before is None
    assert (await post(client, VIEWER_Q, {"Authorization": f"Bearer {key}"})).status_code == 200
    async with db.session() as session:
        after = (await session.execute(select(ApiKey.last_used_at).where(ApiKey.name == "fresh"))).scalar()
    assert after is not None


# --- WebSocket (graphql-transport-ws) -------------------------------------------------------------
# Starlette's TestClient runs the app on its own event loop in a thread, so these tests are synchronous and
# use their own SQLite file rather than the session-scoped async fixtures.


@pytest.fixture
def ws_app(tmp_path: Path) -> tuple[TestClient, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ws.db'}"

    async def prepare() -> str:
        db = Database(url)
        try:
            await migrate.upgrade(db)
            return await make_key(db, Role.VIEWER, "ws")
        finally:
            await db.dispose()

    key = asyncio.run(prepare())
    settings = Settings(database_url=url, secret_key=TEST_SECRET, public_url="http://testserver")
    return TestClient(create_app(settings)), key


def _init_and_receive(client: TestClient, payload: dict[str, Any] | None) -> dict[str, Any]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        assert ws.accepted_subprotocol == "graphql-transport-ws"
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        ws.send_json(message)
        reply: dict[str, Any] = ws.receive_json()
        return reply


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "Bearer ek_unknownunknownunknownunknownunknown00"},
        {"Authorization": "Basic abc"},
        {"Authorization": 42},
        {"token": "whatever"},
    ],
)
def test_ws_without_a_valid_key_is_closed_4403(
    ws_app: tuple[TestClient, str], payload: dict[str, Any] | None
) -> None:
    client, _ = ws_app
    with client, pytest.raises(WebSocketDisconnect) as closed:
        _init_and_receive(client, payload)
    assert closed.value.code == 4403


@pytest.mark.parametrize("header", ["Authorization", "authorization"])
def test_ws_with_a_valid_key_is_acknowledged(ws_app: tuple[TestClient, str], header: str) -> None:
    client, key = ws_app
    with client:
        assert _init_and_receive(client, {header: f"Bearer {key}"}) == {"type": "connection_ack"}


def test_ws_operation_before_init_is_refused(ws_app: tuple[TestClient, str]) -> None:
    client, _ = ws_app
    with (
        client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": VIEWER_Q}})
        ws.receive_json()
    assert closed.value.code == 4401


def test_ws_legacy_protocol_is_refused(ws_app: tuple[TestClient, str]) -> None:
    client, key = ws_app
    with (
        client,
        client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        assert ws.accepted_subprotocol is None
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        ws.receive_json()
    assert closed.value.code == 4406
