"""Every request body is bounded before it is read: a declared Content-Length over the route's limit is
refused without reading a byte, a streamed body stops being read once it passes the limit, and a body at
the limit still works. One case per route class: public routes, /graphql JSON, /graphql uploads, webhooks."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from emailkit.app import create_app
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from emailkit.web.bodylimit import SMALL_BYTES, WEBHOOK_BYTES
from emailkit.web.preferences import MAX_FORM_BYTES
from tests.support.environment import TEST_SECRET
from tests.support.graphql import GQL, data
from tests.support.live_server import live_server
from tests.tracking_data import make_deliveries

GRAPHQL_BYTES = 64 * 1024
UPLOAD_BYTES = 1024 * 1024
CHUNK = 1024
PREFLIGHT = {"GraphQL-Require-Preflight": "1"}


@pytest.fixture
def app(runtime: Runtime) -> Starlette:
    settings = Settings(  # type: ignore[arg-type]
        database_url=runtime.db.url,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        max_request_bytes=GRAPHQL_BYTES,
        max_upload_bytes=UPLOAD_BYTES,
        webhook_verify=False,
    )
    return create_app(settings, runtime)


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@dataclass
class Exchange:
    """One request driven at the ASGI level: what the app pulled and what it answered."""

    pulled: int = 0
    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


async def drive(
    app: Starlette,
    method: str,
    path: str,
    *,
    chunks: int,
    headers: list[tuple[bytes, bytes]] | None = None,
    prefix: bytes = b"",
) -> Exchange:
    """Offer ``chunks`` chunks of 1 KiB (no Content-Length unless given) and count how many the app reads;
    the first starts with ``prefix``."""
    out = Exchange()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("198.51.100.1", 40000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, Any]:
        if out.pulled >= chunks:
            # Past the end of what the client sent: as a server does, the client has gone.
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        body = (prefix if out.pulled == 0 else b"").ljust(CHUNK, b"x")
        out.pulled += 1
        return {"type": "http.request", "body": body, "more_body": out.pulled < chunks}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            out.body += message.get("body", b"")

    await app(scope, receive, send)
    return out


async def route_paths(runtime: Runtime) -> dict[str, tuple[str, str, int]]:
    """One path per route class: (method, path, limit)."""
    (d,) = await make_deliveries(runtime.db, 1)
    urls = TrackingUrls("http://testserver", TokenSigner(TEST_SECRET))
    return {
        "subscribe": ("POST", "/subscribe", SMALL_BYTES),
        "unsubscribe": ("POST", urls.unsubscribe(d.id).removeprefix("http://testserver"), SMALL_BYTES),
        "confirm": ("POST", "/confirm/whatever", SMALL_BYTES),
        "click": (
            "GET",
            urls.click(d.id, "https://example.com/").removeprefix("http://testserver"),
            SMALL_BYTES,
        ),
        "graphql": ("POST", "/graphql", GRAPHQL_BYTES),
        "events": ("POST", "/api/events", GRAPHQL_BYTES),
        "webhook": ("POST", "/webhooks/sendgrid", WEBHOOK_BYTES),
    }


async def test_a_declared_oversized_body_is_refused_without_reading_it(
    app: Starlette, runtime: Runtime
) -> None:
    routes = await route_paths(runtime)
    routes["upload"] = ("POST", "/graphql", UPLOAD_BYTES)
    for name, (method, path, limit) in routes.items():
        headers = [(b"content-length", str(500 * 1024 * 1024).encode())]
        if name == "upload":
            headers += [
                (b"content-type", b"multipart/form-data; boundary=x"),
                (b"graphql-require-preflight", b"1"),
            ]
        out = await drive(app, method, path, chunks=500 * 1024, headers=headers)
        assert (name, out.status, out.pulled) == (name, 413, 0)
        assert out.headers[b"connection"] == b"close"
        body = out.json()
        if path == "/graphql":
            (error,) = body["errors"]
            assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "limitBytes": limit}
            setting = "EMAILKIT_MAX_UPLOAD_BYTES" if name == "upload" else "EMAILKIT_MAX_REQUEST_BYTES"
            assert setting in error["message"]
        else:
            assert (body["code"], body["limitBytes"]) == ("PAYLOAD_TOO_LARGE", limit), name


async def test_a_streamed_body_stops_being_read_at_the_limit(
    app: Starlette, runtime: Runtime, admin_key: str
) -> None:
    routes = await route_paths(runtime)
    # Chunked as an HTTP/1.1 client sends it, and with no framing header at all (as over HTTP/2).
    for framing, (name, (method, path, limit)) in itertools.product(
        [[(b"transfer-encoding", b"chunked")], []], routes.items()
    ):
        # /graphql authenticates before it reads: without a key nothing would be read at all.
        headers = [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {admin_key}".encode()),
            *framing,
        ]
        out = await drive(app, method, path, chunks=limit // CHUNK * 10, headers=headers)
        if name in ("confirm", "click"):
            # These decide by their signed URL alone and answer without reading the body at all.
            assert out.pulled == 0 and out.status != 413, (name, out.status)
            continue
        if name == "unsubscribe":
            # The preference centre reads its form, and stops at its own, smaller limit.
            assert out.status == 413 and out.pulled == MAX_FORM_BYTES // CHUNK + 1, (name, out.pulled)
            continue
        assert out.status == 413, (name, out.status, out.body)
        # Read up to the chunk that crossed the limit, never the rest.
        assert out.pulled == limit // CHUNK + 1, (name, out.pulled)
        assert out.json()["errors" if path == "/graphql" else "code"] is not None


async def test_a_streamed_upload_stops_being_read_at_the_upload_limit(app: Starlette, admin_key: str) -> None:
    headers = [
        (b"content-type", b"multipart/form-data; boundary=x"),
        (b"graphql-require-preflight", b"1"),
        (b"authorization", f"Bearer {admin_key}".encode()),
        (b"transfer-encoding", b"chunked"),
    ]
    # A well-formed start (operations, map, then a file part whose content never ends).
    operations = json.dumps({"query": IMPORT, "variables": {"input": {"file": None}}})
    prefix = (
        f'--x\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{operations}\r\n'
        '--x\r\nContent-Disposition: form-data; name="map"\r\n\r\n{"0": ["variables.input.file"]}\r\n'
        '--x\r\nContent-Disposition: form-data; name="0"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n'
        "email\n"
    ).encode()
    out = await drive(
        app, "POST", "/graphql", chunks=UPLOAD_BYTES // CHUNK * 4, headers=headers, prefix=prefix
    )
    assert out.status == 413
    assert out.pulled == UPLOAD_BYTES // CHUNK + 1
    assert out.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def padded_json(payload: dict[str, Any], size: int) -> bytes:
    """``payload`` as JSON of exactly ``size`` bytes (trailing whitespace is valid JSON)."""
    body = json.dumps(payload).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def test_subscribe_at_the_limit_works_and_one_byte_more_is_413(
    http: httpx.AsyncClient, gql: GQL
) -> None:
    created = data(
        await gql(
            "mutation($i: CreateListInput!) { createList(input: $i) { list { id } } }",
            {"i": {"name": "News", "optin": "SINGLE", "visibility": "PUBLIC"}},
        )
    )
    list_id = created["createList"]["list"]["id"]
    headers = {"Content-Type": "application/json"}
    at_limit = padded_json({"email": "edge@example.com", "lists": [list_id]}, SMALL_BYTES)
    resp = await http.post("/subscribe", content=at_limit, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True}
    over = padded_json({"email": "over@example.com", "lists": [list_id]}, SMALL_BYTES + 1)
    resp = await http.post("/subscribe", content=over, headers=headers)
    assert resp.status_code == 413
    assert resp.json()["limitBytes"] == SMALL_BYTES
    found = data(
        await gql(
            '{ a: subscriber(email: "edge@example.com") { id } b: subscriber(email: "over@example.com") { id } }'
        )
    )
    assert found["a"] is not None and found["b"] is None


async def test_graphql_json_at_the_limit_works_and_one_byte_more_is_413(
    http: httpx.AsyncClient, admin_key: str
) -> None:
    headers = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}
    query = {"query": "{ viewer { name } }"}
    resp = await http.post("/graphql", content=padded_json(query, GRAPHQL_BYTES), headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"viewer": {"name": "admin"}}
    resp = await http.post("/graphql", content=padded_json(query, GRAPHQL_BYTES + 1), headers=headers)
    assert resp.status_code == 413
    assert resp.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


IMPORT = """mutation($input: ImportSubscribersInput!) {
  importSubscribers(input: $input) { import { id } userErrors { code message } }
}"""


def upload_request(csv: bytes, admin_key: str) -> httpx.Request:
    return httpx.Request(
        "POST",
        "http://testserver/graphql",
        headers={"Authorization": f"Bearer {admin_key}", **PREFLIGHT},
        data={
            "operations": json.dumps({"query": IMPORT, "variables": {"input": {"file": None}}}),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files={"0": ("people.csv", csv, "text/csv")},
    )


async def test_an_upload_at_the_upload_limit_works_and_one_byte_more_is_413(
    http: httpx.AsyncClient, admin_key: str
) -> None:
    rows = b"email\nfirst@example.com\n"
    overhead = len(upload_request(rows, admin_key).read()) - len(rows)
    # A CSV whose request is exactly the upload limit: padding rows of a valid address.
    filler = UPLOAD_BYTES - overhead - len(rows)
    line = b"pad@example.com\n"
    csv = rows + line * (filler // len(line)) + b"\n" * (filler % len(line))
    request = upload_request(csv, admin_key)
    assert len(request.read()) == UPLOAD_BYTES
    resp = await http.send(request)
    assert resp.status_code == 200, resp.text
    assert data(resp.json())["importSubscribers"]["userErrors"] == []

    request = upload_request(csv + b"\n", admin_key)
    assert len(request.read()) == UPLOAD_BYTES + 1
    resp = await http.send(request)
    assert resp.status_code == 413
    assert resp.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_over_a_real_socket_the_server_answers_413_before_the_body_is_sent(app: Starlette) -> None:
    """Through uvicorn: a 500 MB declared body and an endless chunked one are both cut off early."""
    async with live_server(app) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 524288000\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()

        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        async with asyncio.timeout(10):
            while not answer.done():
                try:
                    writer.write(chunk)
                    await writer.drain()
                except ConnectionError:
                    # The server answered and closed while we were still sending.
                    break
                sent += 1024
                await asyncio.sleep(0)
                # 100 MB would mean the server kept reading; it must have answered long before.
                assert sent < 100 * 1024 * 1024
            head = await answer
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()
