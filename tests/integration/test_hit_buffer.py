"""The in-memory hit buffer: batching, shutdown flush, behaviour when storage fails, and the real app
losing no tracking hit across a clean stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.feedback import Event, EventType
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.feedback.hitbuffer import HitBuffer, is_transient
from emailkit.domain.feedback.hits import Hit, HitWriter
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.tracking_data import make_deliveries


class Storage:
    """A sink that records batches and can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False
        self.bad: set[int] = set()
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self, batch: Sequence[int]) -> None:
        self.calls += 1
        try:
            if self.down:
                raise ConnectionRefusedError("database is down")
            if self.bad.intersection(batch):
                raise ValueError("cannot store that")
            self.batches.append(list(batch))
        finally:
            self.called.set()

    @property
    def stored(self) -> list[int]:
        return [x for b in self.batches for x in b]


async def until(storage: Storage, condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) until `condition` holds, re-checking after each call of the sink."""
    async with asyncio.timeout(10):
        while not condition():
            storage.called.clear()
            await storage.called.wait()


async def test_hits_are_written_in_batches_by_the_flusher() -> None:
    storage = Storage()
    buf: HitBuffer[int] = HitBuffer(storage, flush_interval=0.05, batch_size=100, max_pending=1000)
    for i in range(250):
        assert buf.add(i)
    await until(storage, lambda: len(storage.stored) == 250)
    assert storage.stored == list(range(250))
    assert max(len(b) for b in storage.batches) <= 100
    assert buf.recorded == 250
    await buf.stop()


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    storage = Storage()
    # An interval far beyond the test's timeout: only the batch-size trigger can write in time.
    buf: HitBuffer[int] = HitBuffer(storage, flush_interval=3600, batch_size=50, max_pending=1000)
    buf.add(-1)  # starts the flusher
    await asyncio.sleep(0)
    for i in range(50):
        buf.add(i)
    await until(storage, lambda: len(storage.stored) >= 50)
    await buf.stop()
    assert storage.stored == [-1, *range(50)]


async def test_stop_writes_everything_pending() -> None:
    storage = Storage()
    buf: HitBuffer[int] = HitBuffer(storage, flush_interval=3600, batch_size=100, max_pending=10_000)
    for i in range(1234):
        buf.add(i)
    await buf.stop()
    assert storage.stored == list(range(1234))
    assert buf.pending == 0
    assert buf.dropped == 0


async def test_a_database_outage_is_retried_without_losing_hits() -> None:
    storage = Storage()
    storage.down = True
    buf: HitBuffer[int] = HitBuffer(
        storage, flush_interval=0.01, batch_size=10, max_pending=1000, retry_initial=0.01, retry_max=0.05
    )
    for i in range(30):
        buf.add(i)
    await until(storage, lambda: storage.calls >= 3)
    assert storage.stored == []
    assert buf.failures >= 3
    for i in range(30, 40):
        buf.add(i)
    storage.down = False
    await until(storage, lambda: len(storage.stored) == 40)
    # Order is kept: the failed batch went back to the front.
    assert storage.stored == list(range(40))
    assert buf.dropped == 0
    await buf.stop()


async def test_the_memory_cap_drops_new_hits_and_logs_the_count(caplog: pytest.LogCaptureFixture) -> None:
    storage = Storage()
    storage.down = True
    buf: HitBuffer[int] = HitBuffer(
        storage,
        flush_interval=0.01,
        batch_size=10,
        max_pending=20,
        retry_initial=0.01,
        retry_max=0.02,
        shutdown_timeout=0.2,
    )
    with caplog.at_level(logging.ERROR, logger="emailkit.tracking"):
        accepted = [buf.add(i) for i in range(25)]
        assert accepted == [True] * 20 + [False] * 5
        assert buf.dropped == 5
        storage.down = False
        await until(storage, lambda: len(storage.stored) == 20)
        await buf.stop()
    assert storage.stored == list(range(20))
    messages = [r.getMessage() for r in caplog.records]
    # The first drop is reported at once, the rest when the log interval allows (here: at the stop).
    assert messages[0].startswith("dropped 1 tracking hits (last reason: buffer full)")
    assert messages[-1].endswith("5 dropped since start")


async def test_stop_gives_up_on_a_dead_database_and_says_how_many_were_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = Storage()
    storage.down = True
    buf: HitBuffer[int] = HitBuffer(
        storage, flush_interval=0.01, batch_size=10, max_pending=100, retry_initial=0.01, shutdown_timeout=0.3
    )
    for i in range(15):
        buf.add(i)
    with caplog.at_level(logging.ERROR, logger="emailkit.tracking"):
        await buf.stop()
    assert buf.dropped == 15
    assert any("15 tracking hits unwritten" in r.getMessage() for r in caplog.records)


async def test_a_hit_storage_refuses_is_dropped_alone() -> None:
    storage = Storage()
    storage.bad = {7}
    buf: HitBuffer[int] = HitBuffer(storage, flush_interval=3600, batch_size=16, max_pending=100)
    for i in range(16):
        buf.add(i)
    await buf.stop()
    assert sorted(storage.stored) == [i for i in range(16) if i != 7]
    assert buf.dropped == 1
    assert buf.recorded == 15


# -- the real app ------------------------------------------------------------------------------------------


async def count_events(db: Database, kind: EventType) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Event).where(Event.type == kind)) or 0)


async def test_every_hit_is_recorded_when_the_app_stops_cleanly(db: Database) -> None:
    deliveries = await make_deliveries(db, 20)
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url="http://testserver")
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=settings.public_url)
    app = create_app(settings, runtime)
    hits = app.state.tracking.hits
    # No timed flush during the test: whatever is written is written by the shutdown.
    hits.flush_interval = 3600
    urls = TrackingUrls("http://testserver", TokenSigner(TEST_SECRET))
    opens = [urls.open_pixel(d.id).removeprefix("http://testserver") for d in deliveries]
    clicks = [
        urls.click(d.id, f"https://example.com/p/{d.id}").removeprefix("http://testserver")
        for d in deliveries
    ]

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

            async def hit(path: str) -> int:
                return (await client.get(path)).status_code

            statuses = await asyncio.gather(*(hit(p) for _ in range(10) for p in opens + clicks))
        assert statuses.count(200) == 200
        assert statuses.count(302) == 200
        assert hits.pending == 400
        assert await count_events(db, EventType.OPEN) == 0
    # The lifespan has ended: everything must be in the database now, with no waiting.
    assert await count_events(db, EventType.OPEN) == 200
    assert await count_events(db, EventType.CLICK) == 200


# -- telling a database outage from bad data ---------------------------------------------------------------


async def test_hits_wait_through_an_unreachable_database() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    writer = HitWriter("postgresql+asyncpg://postgres@127.0.0.1:1/x", anonymous=False)
    attempts = asyncio.Event()

    async def sink(batch: Sequence[Hit]) -> None:
        try:
            await writer(batch)
        finally:
            attempts.set()

    buf: HitBuffer[Hit] = HitBuffer(
        sink, flush_interval=0.01, retry_initial=0.01, retry_max=0.02, shutdown_timeout=0.1
    )
    try:
        for i in range(5):
            buf.add((EventType.OPEN, i + 1, 0.0, None, None, None))
        async with asyncio.timeout(10):
            while buf.failures < 2:
                attempts.clear()
                await attempts.wait()
        assert buf.dropped == 0
        assert buf.pending == 5
    finally:
        await buf.stop()
        await writer.close()


async def test_constraint_violations_are_bad_data_and_outages_are_transient(db: Database) -> None:
    async with db.transaction() as s:
        s.add(Subscriber(email="same@example.com"))
    with pytest.raises(DBAPIError) as duplicate:
        async with db.transaction() as s:
            s.add(Subscriber(email="same@example.com"))
    assert not is_transient(duplicate.value)

    refused = Database("postgresql+asyncpg://postgres@127.0.0.1:1/x", pool_size=1)
    try:
        with pytest.raises(Exception) as outage:
            async with refused.session() as s:
                await s.execute(select(1))
    finally:
        await refused.dispose()
    assert is_transient(outage.value)
