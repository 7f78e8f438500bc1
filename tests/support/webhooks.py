"""Real provider webhook payloads and clients of a fresh app, for the tests of `POST /webhooks/{provider}`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Suppression
from emailkit.db.tables.feedback import Event, EventKey
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


Client = tuple[httpx.AsyncClient, Starlette]
MakeClient = Callable[..., Awaitable[Client]]


@asynccontextmanager
async def webhook_clients(db: Database) -> AsyncIterator[MakeClient]:
    """What the `make_client` fixtures yield: `make(**settings)` builds the app on `db` and a client to it."""
    clients: list[httpx.AsyncClient] = []

    async def make(**overrides: Any) -> Client:
        settings = Settings(
            database_url=db.url, secret_key=TEST_SECRET, public_url="http://testserver", **overrides
        )  # type: ignore[arg-type]
        runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url)
        app = create_app(settings, runtime)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        clients.append(client)
        return client, app

    yield make
    for c in clients:
        await c.aclose()


async def stored(db: Database) -> list[Event]:
    async with db.session() as s:
        return list((await s.execute(select(Event).order_by(Event.id))).scalars())


async def count(db: Database, model: type[Any]) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def nothing_stored(db: Database) -> bool:
    return (
        await count(db, Event) == 0 and await count(db, EventKey) == 0 and await count(db, Suppression) == 0
    )
