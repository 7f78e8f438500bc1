"""A real `emailkit serve` on SQLite in a temporary directory, for the browser tests (the `server` fixture in
tests/e2e/conftest.py), with an API key made by `emailkit create-api-key`."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT = 60.0


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


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[Server]:
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
