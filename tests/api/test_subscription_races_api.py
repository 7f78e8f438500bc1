"""The GraphQL API under a subscription/delete race: userErrors or a rerun, never "Unexpected error.", no orphan.

The app runs on sessions whose default isolation is READ COMMITTED or REPEATABLE READ (as an operator may set
the database's default). One side's transaction is held open on a connection of the test's own while the
mutation under test waits for its lock; then it commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.domain.audience import optin
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.graphql import data
from tests.support.races import orphans, wait_until_blocked

pytestmark = pytest.mark.postgresql_only

CREATE_LIST = """
mutation($name: String!, $visibility: Visibility) {
  createList(input: {name: $name, visibility: $visibility}) { list { id } userErrors { code } }
}
"""
CREATE_SUBSCRIBER = """
mutation($email: String!, $list: ID!) {
  createSubscriber(input: {email: $email, listIds: [$list]}) {
    subscriber { id }
    userErrors { field message code }
  }
}
"""
DELETE_LIST = "mutation($id: ID!) { deleteList(input: {id: $id}) { deletedId userErrors { code } } }"


@pytest.fixture(params=["read committed", "repeatable read"])
async def app_db(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    defaulted = Database(db.url, pool_size=4)

    def set_default(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["server_settings"] = {"default_transaction_isolation": request.param}

    event.listen(defaulted.engine.sync_engine, "do_connect", set_default)
    yield defaulted
    await defaulted.dispose()


@pytest.fixture
async def api(app_db: Database) -> AsyncIterator[Any]:
    settings = Settings(database_url=app_db.url, secret_key=TEST_SECRET, public_url="http://testserver")  # type: ignore[arg-type]
    runtime = Runtime(db=app_db, secret_key=TEST_SECRET, public_url=settings.public_url)
    key = await make_key(app_db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, runtime)), base_url="http://testserver"
    ) as client:

        async def run(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            resp = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert resp.status_code == 200, resp.text
            return data(resp.json())

        run.client = client  # type: ignore[attr-defined]
        yield run


async def _list(api: Any, name: str, visibility: str = "PRIVATE") -> str:
    return str((await api(CREATE_LIST, {"name": name, "visibility": visibility}))["createList"]["list"]["id"])


async def test_create_subscriber_waiting_on_a_deleted_list_is_list_not_found(
    api: Any, app_db: Database
) -> None:
    list_gid = await _list(api, "Race")
    async with app_db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM lists WHERE name = 'Race'"))
        creating = asyncio.ensure_future(
            api(CREATE_SUBSCRIBER, {"email": "late@example.com", "list": list_gid})
        )
        await wait_until_blocked(app_db, waiting=creating)
    out = (await creating)["createSubscriber"]
    assert out["subscriber"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("listIds", "LIST_NOT_FOUND")]
    async with app_db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM subscribers"))).scalar_one() == 0


async def test_delete_list_waiting_on_a_new_subscription_takes_it_along(api: Any, app_db: Database) -> None:
    list_gid = await _list(api, "Race")
    async with app_db.engine.begin() as conn:
        await conn.execute(
            text(
                "WITH p AS (INSERT INTO subscribers "
                "(workspace_id, email, name, attributes, status, created_at, updated_at) "
                "VALUES (1, 'early@example.com', '', '{}', 'ENABLED', now(), now()) RETURNING id) "
                "INSERT INTO subscriptions (workspace_id, subscriber_id, list_id, status, created_at, updated_at) "
                "SELECT 1, p.id, l.id, 'CONFIRMED', now(), now() FROM p, lists AS l WHERE l.name = 'Race'"
            )
        )
        deleting = asyncio.ensure_future(api(DELETE_LIST, {"id": list_gid}))
        await wait_until_blocked(app_db, waiting=deleting)
    out = (await deleting)["deleteList"]
    assert (out["deletedId"], out["userErrors"]) == (list_gid, [])
    assert await orphans(app_db) == 0
    async with app_db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM subscriptions"))).scalar_one() == 0


async def test_the_signup_form_waiting_on_a_deleted_list_answers_unknown_list(
    api: Any, app_db: Database
) -> None:
    list_gid = await _list(api, "Race", "PUBLIC")
    async with app_db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM lists WHERE name = 'Race'"))
        posting = asyncio.ensure_future(
            api.client.post("/subscribe", json={"email": "form@example.com", "lists": [list_gid]})
        )
        await wait_until_blocked(app_db, waiting=posting)
    resp = await posting
    assert (resp.status_code, resp.json()) == (400, {"ok": False, "error": optin.NOT_PUBLIC})
    async with app_db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM subscribers"))).scalar_one() == 0
