"""A running embedded emailkit (SQLite file, in-process worker, outbox) driven through starlette's TestClient."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from emailkit import migrate
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key


class Api:
    """GraphQL over HTTP with an EDITOR key; returns `data`, asserting there were no top-level errors."""

    def __init__(self, client: TestClient, key: str, outbox: Path) -> None:
        self.client = client
        self.key = key
        self.outbox = outbox

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data


@contextmanager
def embedded_app(tmp_path: Path, **settings: Any) -> Iterator[Api]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'emailkit.db'}"

    async def prepare() -> str:
        db = Database(url)
        try:
            await migrate.upgrade(db)
            return await make_key(db, Role.EDITOR, "e2e")
        finally:
            await db.dispose()

    key = asyncio.run(prepare())
    outbox = tmp_path / "outbox"
    config = Settings(  # type: ignore[call-arg]
        database_url=url,
        secret_key=TEST_SECRET,
        outbox_dir=outbox,
        data_dir=tmp_path,
        from_email="hello@example.com",
        **settings,
    )
    with TestClient(create_app(config)) as client:
        yield Api(client, key, outbox)
