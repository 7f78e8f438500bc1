"""importSubscribers over GraphQL: text and multipart uploads, the background job, status and live progress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.runtime import Runtime
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.broker.factory import configure_broker
from emailkit.tasks.broker.middleware import RuntimeScope
from emailkit.tasks.broker.queue import DramatiqJobQueue
from emailkit.tasks.pubsub import InProcessPubSub
from emailkit.tasks.worker import EmbeddedWorker
from tests.support.environment import TEST_SECRET
from tests.support.factories import insert_list, make_key
from tests.support.graphql import GQL, data, graphql_runner

FIXTURES = Path(__file__).parents[1] / "fixtures"
PREFLIGHT = {"GraphQL-Require-Preflight": "1"}

IMPORT = """
mutation($input: ImportSubscribersInput!) {
  importSubscribers(input: $input) { import { id status sourceName } userErrors { field message code } }
}
"""
STATUS = """
query($id: ID!) {
  import(id: $id) {
    id status total processed inserted updated skipped failed error encoding delimiter sourceName mode
    lists { name }
    errors(first: 2) { edges { node { row message } } }
  }
}
"""
FINAL = {"FINISHED", "FAILED"}


def worker_scope(url: str, pubsub: InProcessPubSub) -> RuntimeScope:
    @asynccontextmanager
    async def scope() -> AsyncIterator[Runtime]:
        db = Database(url, pool_size=2)
        runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", pubsub=pubsub)
        try:
            yield runtime
        finally:
            assert runtime.live is not None
            await runtime.live.aclose()
            await db.dispose()

    return scope


@pytest.fixture
async def app_client(db: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a real job queue and an in-process worker running the import jobs."""
    broker = configure_broker(None)
    pubsub = InProcessPubSub()
    jobs = DramatiqJobQueue(broker)
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=jobs, pubsub=pubsub)
    worker = EmbeddedWorker(broker, worker_scope(db.url, pubsub), threads=2, poll_ms=50)
    worker.start()
    app = create_app(settings.model_copy(update={"max_upload_bytes": 1 << 20}), runtime)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            yield c
    finally:
        await worker.stop()
        await pubsub.close()


@pytest.fixture
def api(app_client: httpx.AsyncClient, admin_key: str) -> GQL:
    return graphql_runner(app_client, admin_key)


async def finished(api: GQL, import_id: str, within: float = 60.0) -> dict[str, Any]:
    """The import once it reached a final state (the job runs on the worker's threads)."""
    async with asyncio.timeout(within):
        while True:
            state: dict[str, Any] = data(await api(STATUS, {"id": import_id}))["import"]
            if state["status"] in FINAL:
                return state
            await asyncio.sleep(0.05)


async def test_import_from_text_runs_in_the_background(api: GQL, db: Database) -> None:
    list_id = to_global_id("MailingList", await insert_list(db))
    csv = (FIXTURES / "import_messy.csv").read_bytes().decode("utf-8-sig")
    started = data(await api(IMPORT, {"input": {"csv": csv, "listIds": [list_id]}}))["importSubscribers"]
    assert started["userErrors"] == []
    assert started["import"]["status"] in ("QUEUED", "RUNNING", "FINISHED")
    assert started["import"]["sourceName"] == "csv"

    state = await finished(api, started["import"]["id"])
    assert state == {
        "id": started["import"]["id"],
        "status": "FINISHED",
        "total": 11,
        "processed": 11,
        "inserted": 7,
        "updated": 0,
        "skipped": 0,
        "failed": 4,
        "error": None,
        # Text arrives as UTF-8 (the BOM was dropped with the JSON encoding).
        "encoding": "UTF-8",
        "delimiter": ";",
        "sourceName": "csv",
        "mode": "UPSERT",
        "lists": [{"name": "Newsletter"}],
        "errors": {
            "edges": [
                {
                    "node": {
                        "row": 4,
                        "message": "Invalid email address: An email address must have an @-sign.",
                    }
                },
                {"node": {"row": 6, "message": "duplicate email: already in row 2"}},
            ]
        },
    }
    listed = data(await api("{ imports(first: 5) { totalCount edges { node { id status } } } }"))["imports"]
    assert listed["edges"][0]["node"] == {"id": state["id"], "status": "FINISHED"}
    node = data(
        await api("query($id: ID!) { node(id: $id) { ... on Import { inserted } } }", {"id": state["id"]})
    )
    assert node["node"] == {"inserted": 7}
    people = data(await api('{ subscriber(email: "bob@example.com") { name attributes } }'))["subscriber"]
    assert people == {
        "name": 'Bob "the builder"',
        "attributes": {"City": "Paris", "VIP": False, "Notes": "Line one\r\nLine two"},
    }


def multipart(query: str, variables: dict[str, Any], file_path: str, content: bytes) -> dict[str, Any]:
    """The GraphQL multipart request spec: operations, map, then the files."""
    return {
        "data": {
            "operations": json.dumps({"query": query, "variables": variables}),
            "map": json.dumps({"0": [file_path]}),
        },
        "files": {"0": ("latin1.csv", content, "text/csv")},
    }


async def test_import_from_an_uploaded_file(app_client: httpx.AsyncClient, api: GQL, admin_key: str) -> None:
    content = (FIXTURES / "import_latin1.csv").read_bytes()
    resp = await app_client.post(
        "/graphql",
        headers={"Authorization": f"Bearer {admin_key}", **PREFLIGHT},
        **multipart(
            IMPORT, {"input": {"file": None, "mode": "SKIP_EXISTING"}}, "variables.input.file", content
        ),
    )
    assert resp.status_code == 200, resp.text
    started = data(resp.json())["importSubscribers"]
    assert started["userErrors"] == []
    assert started["import"]["sourceName"] == "latin1.csv"
    state = await finished(api, started["import"]["id"])
    assert (state["status"], state["inserted"], state["encoding"], state["mode"]) == (
        "FINISHED",
        2,
        "Windows-1252 (Latin-1)",
        "SKIP_EXISTING",
    )
    found = data(await api('{ subscriber(email: "jose@example.com") { name attributes } }'))["subscriber"]
    assert found == {"name": "José García", "attributes": {"city": "Málaga", "note": "Café €5"}}


async def test_uploads_need_the_preflight_header_and_a_bounded_size(
    app_client: httpx.AsyncClient, admin_key: str, db: Database
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    small = multipart(IMPORT, {"input": {"file": None}}, "variables.input.file", b"email\na@example.com\n")
    refused = await app_client.post("/graphql", headers=auth, **small)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "PREFLIGHT_REQUIRED"

    big = multipart(IMPORT, {"input": {"file": None}}, "variables.input.file", b"x" * (2 << 20))
    too_large = await app_client.post("/graphql", headers={**auth, **PREFLIGHT}, **big)
    assert too_large.status_code == 413
    assert too_large.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    async with db.session() as s:
        assert (await imports.find_imports(s, first=5, after=None)).items == []


@pytest.mark.parametrize(
    ("input", "error"),
    [
        ({"csv": "email\na@example.com\n", "file": None, "listIds": []}, None),
        ({}, {"field": None, "message": "Give exactly one of csv and file", "code": "INVALID_INPUT"}),
        (
            {"csv": "name;city\nAnn;Rome\n"},
            {
                "field": "csv",
                "message": "The file has no email column (columns: 'name', 'city'); name one with columnMap, "
                'e.g. {"E-Mail": "email"}',
                "code": "INVALID_INPUT",
            },
        ),
        ({"csv": ""}, {"field": "csv", "message": "The file is empty", "code": "REQUIRED"}),
        (
            {"csv": "Mail\na@example.com\n", "columnMap": {"Mail": ""}},
            {
                "field": "columnMap",
                "message": "columnMap: empty target for column 'Mail'",
                "code": "INVALID_INPUT",
            },
        ),
        (
            {"csv": "email\n", "listIds": [to_global_id("MailingList", 999)]},
            {"field": "listIds", "message": "1 of the given lists do not exist", "code": "LIST_NOT_FOUND"},
        ),
        (
            {"csv": "email\n", "listIds": ["nope"]},
            {"field": "listIds", "message": "Not a valid MailingList ID: 'nope'", "code": "INVALID_ID"},
        ),
    ],
)
async def test_bad_requests_are_user_errors(
    api: GQL, input: dict[str, Any], error: dict[str, Any] | None
) -> None:
    out = data(await api(IMPORT, {"input": input}))["importSubscribers"]
    if error is None:
        assert out["userErrors"] == [] and out["import"] is not None
        await finished(api, out["import"]["id"])
    else:
        assert out == {"import": None, "userErrors": [error]}


async def test_viewers_cannot_import(api: GQL, db: Database) -> None:
    viewer = await make_key(db, Role.VIEWER, "viewer")
    body = await api(IMPORT, {"input": {"csv": "email\na@example.com\n"}}, key=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert data(await api(STATUS, {"id": to_global_id("Import", 1)}, key=viewer))["import"] is None


async def test_without_a_job_queue_the_import_fails_at_once(gql: GQL) -> None:
    out = data(await gql(IMPORT, {"input": {"csv": "email\na@example.com\n"}}))["importSubscribers"]
    state = data(await gql(STATUS, {"id": out["import"]["id"]}))["import"]
    assert (state["status"], state["error"]) == ("FAILED", "No job queue is configured to run imports")


# --- live progress over graphql-transport-ws ---------------------------------------------------------------
# Starlette's TestClient runs the whole app (with its own in-process worker) on its own loop in a thread.

PROGRESS = "subscription($id: ID!) { importProgress(id: $id) { status total processed inserted failed } }"


def test_import_progress_streams_until_the_import_ends(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ws.db'}"
    rows = "".join(f"user{i}@example.com\n" for i in range(3000))

    async def prepare() -> tuple[str, int]:
        db = Database(url)
        try:
            await migrate.upgrade(db)
            key = await make_key(db, Role.VIEWER, "ws")

            async def chunks() -> AsyncIterator[bytes]:
                yield ("email\n" + rows + "nobody\n").encode()

            async with db.transaction() as s:
                row = await imports.create_import(s, imports.ImportRequest("big.csv"), chunks())
            return key, row.id
        finally:
            await db.dispose()

    key, import_id = asyncio.run(prepare())
    settings = Settings(database_url=url, secret_key=TEST_SECRET, public_url="http://testserver")  # type: ignore[arg-type]
    app = create_app(settings)
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(
            {
                "type": "subscribe",
                "id": "1",
                "payload": {"query": PROGRESS, "variables": {"id": to_global_id("Import", import_id)}},
            }
        )
        first = ws.receive_json()
        assert first["payload"]["data"]["importProgress"]["status"] == "QUEUED"
        # Subscribed: now let the app's own worker run the import.
        runtime = app.state.runtime
        client.portal.call(runtime.jobs.enqueue, imports.IMPORT_JOB, {"import_id": import_id})
        seen = [first["payload"]["data"]["importProgress"]]
        while True:
            message = ws.receive_json()
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["importProgress"])
    statuses = [s["status"] for s in seen]
    assert statuses[0] == "QUEUED" and statuses[-1] == "FINISHED"
    assert "RUNNING" in statuses
    assert seen[-1] == {"status": "FINISHED", "total": 3001, "processed": 3001, "inserted": 3000, "failed": 1}
    processed = [s["processed"] for s in seen]
    assert processed == sorted(processed)


ERRORS_PAGE = """
query($id: ID!, $after: String) {
  import(id: $id) {
    errors(first: 250, after: $after) {
      totalCount
      edges { cursor node { row message } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}
"""


async def test_every_stored_row_error_can_be_read_page_by_page(api: GQL) -> None:
    n = 1_234  # more than the 1,000 a single list could once return
    csv = (
        "email,name\n" + "".join(f"not-an-address-{i},Person {i}\n" for i in range(n)) + "ok@example.com,Ok\n"
    )
    started = data(await api(IMPORT, {"input": {"csv": csv}}))["importSubscribers"]
    assert started["userErrors"] == []
    state = await finished(api, started["import"]["id"])
    assert (state["status"], state["failed"], state["inserted"]) == ("FINISHED", n, 1)

    rows: list[int] = []
    after = None
    pages = 0
    while True:
        page = data(await api(ERRORS_PAGE, {"id": state["id"], "after": after}))["import"]["errors"]
        pages += 1
        assert page["totalCount"] == n
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        rows += [edge["node"]["row"] for edge in page["edges"]]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    # Rows 2..n+1 (the header is row 1), each once, in order, over ceil(n / 250) pages.
    assert rows == list(range(2, n + 2))
    assert pages == 5
    assert page["edges"][-1]["node"]["message"].startswith("Invalid email address")
