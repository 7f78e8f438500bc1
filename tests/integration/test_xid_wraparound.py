"""After transaction-id wraparound a frozen subscriber is still locked by a subscription that names it.

A row's ``xmin`` keeps its 32-bit transaction id after VACUUM FREEZE, and after 2^32 transactions a new one gets
the same 32-bit id again: a check that took "xmin equals my transaction id" for "I wrote this row" (migration
0005's triggers) skipped the lock on such a row, and a concurrent delete left an orphan subscription. Burning
2^32 transactions is out of reach, so a throw-away cluster is moved there with pg_resetwal: the epoch of the next
transaction id advances by one (the 64-bit counter passes 2^32) and its 32-bit part is set to the xmin of a
frozen subscriber. The next writing transaction then carries exactly that id, and subscribes the subscriber
while another deletes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscription
from emailkit.domain.audience import lists, subscribers
from tests.support.pg_cluster import ThrowawayCluster, running_cluster
from tests.support.races import OK, backend_pid, orphans, outcome, wait_until_blocked

pytestmark = pytest.mark.postgresql_only

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    async with running_cluster() as made:
        yield made


async def _frozen_subscriber(cluster: ThrowawayCluster) -> tuple[int, int, int]:
    """A list and a subscriber, every row of the database frozen: (list id, subscriber id, subscriber xmin).
    The subscriber is the last row written, so no later transaction id was ever used."""
    db = Database(cluster.url, pool_size=2)
    try:
        await migrate.upgrade(db)
        async with db.transaction() as s:
            list_id = (await lists.create_list(s, lists.ListInput(name="Frozen"))).id
        async with db.transaction() as s:
            person_id = (await subscribers.create_subscriber(s, "frozen@example.com")).id
        async with db.engine.connect() as conn:
            xmin = (
                await conn.execute(
                    text("SELECT xmin::text::bigint FROM subscribers WHERE id = :id"), {"id": person_id}
                )
            ).scalar_one()
    finally:
        await db.dispose()
    engine = create_async_engine(cluster.url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("VACUUM (FREEZE)"))
    finally:
        await engine.dispose()
    return list_id, person_id, int(xmin)


async def test_a_frozen_subscriber_is_locked_by_a_subscription_after_xid_wraparound(
    cluster: ThrowawayCluster,
) -> None:
    list_id, person_id, xmin = await _frozen_subscriber(cluster)
    await asyncio.to_thread(cluster.stop)
    await asyncio.to_thread(cluster.run, "pg_resetwal", "-e", "1", "-x", str(xmin), str(cluster.data))
    await asyncio.to_thread(cluster.start)

    db = Database(cluster.url, pool_size=3)
    try:
        async with db.engine.connect() as inserting, db.engine.connect() as deleting:
            await inserting.begin()
            await inserting.execute(
                insert(Subscription).values(
                    subscriber_id=person_id,
                    list_id=list_id,
                    status="CONFIRMED",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
            # The precondition, or the test proves nothing: past wraparound, with the frozen row's 32-bit id.
            current = (
                await inserting.execute(text("SELECT pg_current_xact_id()::text::numeric"))
            ).scalar_one()
            assert int(current) == (1 << 32) + xmin
            pid = await backend_pid(deleting)
            waiting = asyncio.ensure_future(
                outcome(deleting.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": person_id}))
            )
            # The subscription locked the subscriber: the delete waits for it, then takes it along.
            await wait_until_blocked(db, pid, waiting=waiting)
            await inserting.commit()
            assert await waiting == OK
            await deleting.commit()
        assert await orphans(db) == 0
        async with db.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(Subscription))).scalar_one() == 0
    finally:
        await db.dispose()
