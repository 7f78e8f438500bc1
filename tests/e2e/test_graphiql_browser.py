"""GraphiQL in a real browser against a real `emailkit serve`, with nothing loaded from another host
(the browser set-up is in :mod:`tests.e2e.browser`)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, Request, Route, async_playwright, expect

from tests.e2e.browser import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT = 60.0
UI_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Server:
    base_url: str
    api_key: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _emailkit_command() -> list[str]:
    # The console script of the interpreter running the tests, so a venv's emailkit is the one tested.
    script = Path(sys.executable).with_name("emailkit")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from emailkit.cli import main; main()"]


def _server_env(data_dir: Path, port: int) -> dict[str, str]:
    # Drop the developer's own EMAILKIT_* settings: the server must run on the embedded default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILKIT_")}
    env.update(
        EMAILKIT_DATA_DIR=str(data_dir),
        EMAILKIT_DATABASE_URL=f"sqlite+aiosqlite:///{data_dir / 'emailkit.db'}",
        EMAILKIT_OUTBOX_DIR=str(data_dir / "outbox"),
        EMAILKIT_PUBLIC_URL=f"http://127.0.0.1:{port}",
        EMAILKIT_LOG_LEVEL="WARNING",
    )
    return env


def _server_log(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_healthy(base_url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            if proc.returncode is not None:
                pytest.fail(f"emailkit serve exited with {proc.returncode}:\n{_server_log(log)}")
            try:
                if (await http.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(
                    f"emailkit serve did not answer /healthz in {STARTUP_TIMEOUT}s:\n{_server_log(log)}"
                )
            await asyncio.sleep(0.1)


async def _create_api_key(cwd: Path, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *_emailkit_command(),
        "create-api-key",
        "--name",
        "e2e",
        "--role",
        "admin",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=STARTUP_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    port = _free_port()
    env = _server_env(tmp_path / ".emailkit", port)
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *_emailkit_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        await _wait_healthy(base_url, proc, log)
        yield Server(base_url=base_url, api_key=await _create_api_key(tmp_path, env))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _run_in_ide(page: Page, operation: str) -> None:
    """Replace the editor's text the way a paste does, then press GraphiQL's run button."""
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.click()
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.insert_text(operation)
    await page.locator(".graphiql-execute-button").click()


def _origin(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


# `chromium` first: a missing browser fails before a server is started for nothing.
async def test_graphiql_runs_operations_with_no_other_host(chromium: str, server: Server) -> None:
    own_origin = _origin(server.base_url)
    seen: list[str] = []
    foreign: list[str] = []
    graphql_posts: list[Request] = []
    problems: list[str] = []

    async def only_own_origin(route: Route) -> None:
        url = route.request.url
        if _origin(url) == own_origin:
            await route.continue_()
        else:
            foreign.append(url)
            await route.abort()

    def on_request(request: Request) -> None:
        seen.append(request.url)
        if request.method == "POST" and request.url.endswith("/graphql"):
            graphql_posts.append(request)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            await context.route("**/*", only_own_origin)
            page = await context.new_page()
            page.on("request", on_request)
            page.on("websocket", lambda ws: seen.append(ws.url))
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
            )

            await page.goto(f"{server.base_url}/graphql")
            await expect(page.locator(".graphiql-execute-button")).to_be_visible(timeout=UI_TIMEOUT_MS)

            await page.fill("#api-key", server.api_key)
            await page.press("#api-key", "Enter")
            await expect(page.locator("#api-key-status")).to_have_text("Key saved in this browser.")

            response = page.locator(".graphiql-response")
            await _run_in_ide(
                page,
                'mutation { createList(input: {name: "Made in GraphiQL"}) { list { name } userErrors { code } } }',
            )
            await expect(response).to_contain_text('"name": "Made in GraphiQL"', timeout=UI_TIMEOUT_MS)
            await expect(response).to_contain_text('"userErrors": []')

            await _run_in_ide(
                page, "{ viewer { name role } lists(first: 10) { totalCount edges { node { name } } } }"
            )
            await expect(response).to_contain_text('"name": "e2e"', timeout=UI_TIMEOUT_MS)
            await expect(response).to_contain_text('"role": "ADMIN"')
            await expect(response).to_contain_text('"totalCount": 1')

            # The key outlives a reload: it is kept in this browser's localStorage.
            await page.reload()
            await expect(page.locator("#api-key")).to_have_value(server.api_key)
        finally:
            await browser.close()

    assert foreign == [], f"the page reached for other hosts: {foreign}"
    # The CSP blocks some of these in the renderer before routing sees them; the request event still fires.
    assert [url for url in seen if _origin(url) != own_origin] == []
    assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in seen), seen
    operations = [r for r in graphql_posts if "createList" in (r.post_data or "")]
    assert operations, "the mutation was not sent over HTTP"
    assert operations[0].headers.get("authorization") == f"Bearer {server.api_key}"
    assert problems == []
