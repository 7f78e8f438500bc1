"""Subscriptions only ever name existing lists and subscribers, and go when either goes.

Both databases declare the foreign keys (on PostgreSQL again since migration 0006). The same behaviour is
asserted on both, and on PostgreSQL also under concurrency: a delete racing an insert never leaves a
subscription behind (every isolation level and interleaving: test_subscription_races).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from tests.integration.test_migrations import create_scratch_database, drop_scratch_database
from tests.support.environment import PG_URL
from tests.support.races import orphans

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _list(db: Database, name: str = "L") -> int:
    async with db.engine.begin() as conn:
        return int(
            (
                await conn.execute(
                    insert(MailingList)
                    .values(name=name, created_at=NOW, updated_at=NOW)
                    .returning(MailingList.id)
                )
            ).scalar_one()
        )


def _person(email: str) -> Any:
    return insert(Subscriber).values(
        email=email, name="", attributes={}, status="ENABLED", created_at=NOW, updated_at=NOW
    )


async def _subscribers(db: Database, count: int) -> list[int]:
    async with db.engine.begin() as conn:
        return [
            int((await conn.execute(_person(f"p{i}@example.com").returning(Subscriber.id))).scalar_one())
            for i in range(count)
        ]


INSERT = insert(Subscription)


def _rows(pairs: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {"subscriber_id": s, "list_id": lst, "status": "CONFIRMED", "created_at": NOW, "updated_at": NOW}
        for s, lst in pairs
    ]


async def _count(db: Database, *where: Any) -> int:
    async with db.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(Subscription).where(*where))).scalar_one()
        )


async def test_a_subscription_to_a_missing_list_is_refused(db: Database) -> None:
    (person,) = await _subscribers(db, 1)
    list_id = await _list(db)
    with pytest.raises(IntegrityError, match=r"fk_subscriptions_list_id_lists|FOREIGN KEY"):
        async with db.engine.begin() as conn:
            await conn.execute(INSERT, _rows([(person, list_id), (person, list_id + 999)]))
    assert await _count(db) == 0


async def test_a_subscription_of_a_missing_subscriber_is_refused(db: Database) -> None:
    people = await _subscribers(db, 3)
    list_id = await _list(db)
    with pytest.raises(IntegrityError, match=r"fk_subscriptions_subscriber_id_subscribers|FOREIGN KEY"):
        async with db.engine.begin() as conn:
            await conn.execute(INSERT, _rows([(people[0], list_id), (people[2] + 1, list_id)]))
    assert await _count(db) == 0


async def test_a_missing_subscriber_inside_a_dense_bulk_insert_is_refused(db: Database) -> None:
    """An insert ... select over a range of ids, as an import does, with one id deleted from the middle."""
    people = await _subscribers(db, 40)
    list_id = await _list(db)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": people[20]})
    select_range = text(
        "INSERT INTO subscriptions (workspace_id, subscriber_id, list_id, status, created_at, updated_at) "
        "SELECT 1, g, :list_id, 'CONFIRMED', :now, :now "
        "FROM generate_series(CAST(:lo AS BIGINT), CAST(:hi AS BIGINT)) AS g"
        if db.dialect == "postgresql"
        else "WITH RECURSIVE g(x) AS (SELECT :lo UNION ALL SELECT x + 1 FROM g WHERE x < :hi) "
        "INSERT INTO subscriptions (workspace_id, subscriber_id, list_id, status, created_at, updated_at) "
        "SELECT 1, x, :list_id, 'CONFIRMED', :now, :now FROM g"
    )
    params = {"list_id": list_id, "now": NOW, "lo": people[0], "hi": people[-1]}
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(select_range, params)
    assert await _count(db) == 0
    # Without the gap the same statement goes through, new subscribers and all, in one transaction.
    async with db.engine.begin() as conn:
        await conn.execute(_person("back@example.com").values(id=people[20]))
        await conn.execute(select_range, params)
    assert await _count(db) == 40


async def test_subscribers_and_their_subscriptions_written_in_one_transaction(db: Database) -> None:
    list_id = await _list(db)
    async with db.engine.begin() as conn:
        ids = [
            (await conn.execute(_person(f"same-tx-{i}@example.com").returning(Subscriber.id))).scalar_one()
            for i in range(5)
        ]
        await conn.execute(INSERT, _rows([(int(i), list_id) for i in ids]))
    assert await _count(db, Subscription.list_id == list_id) == 5


async def test_deleting_lists_and_subscribers_removes_their_subscriptions(db: Database) -> None:
    people = await _subscribers(db, 4)
    first, second = await _list(db, "first"), await _list(db, "second")
    async with db.engine.begin() as conn:
        await conn.execute(INSERT, _rows([(p, lst) for p in people for lst in (first, second)]))
    async with db.engine.begin() as conn:
        await conn.execute(MailingList.__table__.delete().where(MailingList.id == first))
    assert await _count(db) == 4
    assert await _count(db, Subscription.list_id == first) == 0
    async with db.engine.begin() as conn:
        await conn.execute(Subscriber.__table__.delete().where(Subscriber.id.in_(people[:3])))
    assert await _count(db) == 1
    assert await _count(db, Subscription.subscriber_id == people[3]) == 1


async def test_keys_of_a_subscription_cannot_be_repointed_at_nothing(db: Database) -> None:
    people = await _subscribers(db, 2)
    list_id = await _list(db)
    async with db.engine.begin() as conn:
        await conn.execute(INSERT, _rows([(people[0], list_id)]))
    for statement in (
        "UPDATE subscriptions SET subscriber_id = :other + 1000",
        "UPDATE subscriptions SET list_id = list_id + 1000",
        "UPDATE lists SET id = id + 1000",
        "UPDATE subscribers SET id = id + 1000 WHERE id = :first",
    ):
        with pytest.raises(IntegrityError, match=r"fk_subscriptions_|FOREIGN KEY"):
            async with db.engine.begin() as conn:
                await conn.execute(text(statement), {"other": people[1], "first": people[0]})
    # Pointing at another existing subscriber, or changing any other column, is fine.
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE subscriptions SET subscriber_id = :other, status = 'UNSUBSCRIBED'"),
            {"other": people[1]},
        )
    assert (
        await _count(db, Subscription.subscriber_id == people[1], Subscription.status == "UNSUBSCRIBED") == 1
    )


@pytest.mark.postgresql_only
async def test_the_keys_are_declared_and_no_reference_triggers_remain(db: Database) -> None:
    async with db.engine.connect() as conn:
        keys = (
            await conn.execute(
                text(
                    "SELECT conname, confrelid::regclass::text, confdeltype::text FROM pg_constraint "
                    "WHERE conrelid = 'subscriptions'::regclass AND contype = 'f' AND convalidated ORDER BY conname"
                )
            )
        ).all()
        # What migration 0005 created.
        pattern = r"^emailkit_(subscriptions|lists|subscribers)_|^emailkit_refuse_key_change$"
        leftovers = (
            await conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE tgname ~ :pattern "
                    "UNION ALL SELECT proname FROM pg_proc WHERE proname ~ :pattern"
                ),
                {"pattern": pattern},
            )
        ).all()
    assert [tuple(k) for k in keys] == [
        ("fk_subscriptions_list_id_lists", "lists", "c"),
        ("fk_subscriptions_subscriber_id_subscribers", "subscribers", "c"),
    ]
    assert leftovers == []


async def _wait_until_blocked(db: Database, pid: int) -> None:
    """Until backend `pid` waits on a lock (polled: a lock wait has no event to subscribe to)."""
    async with db.engine.connect() as conn:
        for _ in range(2000):
            waiting = (
                await conn.execute(
                    text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid},
                )
            ).scalar()
            if waiting:
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"backend {pid} never waited on a lock")


async def _pid(conn: Any) -> int:
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.mark.postgresql_only
async def test_a_delete_waits_for_a_subscribing_transaction_then_removes_its_rows(db: Database) -> None:
    (person,) = await _subscribers(db, 1)
    list_id = await _list(db)
    async with db.engine.connect() as subscribing, db.engine.connect() as deleting:
        await subscribing.begin()
        await subscribing.execute(INSERT, _rows([(person, list_id)]))
        pid = await _pid(deleting)  # which begins the deleting transaction
        delete = asyncio.create_task(
            deleting.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": person})
        )
        await _wait_until_blocked(db, pid)
        assert not delete.done()
        await subscribing.commit()
        await delete
        await deleting.commit()
    assert await _count(db) == 0


@pytest.mark.postgresql_only
async def test_a_subscription_to_a_subscriber_being_deleted_fails_once_the_delete_commits(
    db: Database,
) -> None:
    (person,) = await _subscribers(db, 1)
    list_id = await _list(db)
    async with db.engine.connect() as subscribing, db.engine.connect() as deleting:
        await deleting.begin()
        await deleting.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": person})
        pid = await _pid(subscribing)  # which begins the subscribing transaction
        insert = asyncio.create_task(subscribing.execute(INSERT, _rows([(person, list_id)])))
        await _wait_until_blocked(db, pid)
        await deleting.commit()
        with pytest.raises(DBAPIError, match="fk_subscriptions_subscriber_id_subscribers"):
            await insert
        await subscribing.rollback()
    assert await _count(db) == 0


@pytest.mark.postgresql_only
async def test_a_list_delete_waits_for_a_bulk_subscribe_of_new_subscribers(db: Database) -> None:
    """The list is held by the subscribing transaction, whose subscribers are all new."""
    list_id = await _list(db)
    async with db.engine.connect() as subscribing, db.engine.connect() as deleting:
        await subscribing.begin()
        await subscribing.execute(
            text(
                "WITH fresh AS (INSERT INTO subscribers "
                "(workspace_id, email, name, attributes, status, created_at, updated_at) "
                "SELECT 1, 'bulk' || g || '@example.com', '', '{}', 'ENABLED', now(), now() "
                "FROM generate_series(1, 500) AS g RETURNING id) "
                "INSERT INTO subscriptions (workspace_id, subscriber_id, list_id, status, created_at, updated_at) "
                "SELECT 1, id, :list_id, 'CONFIRMED', now(), now() FROM fresh"
            ),
            {"list_id": list_id},
        )
        pid = await _pid(deleting)  # which begins the deleting transaction
        delete = asyncio.create_task(
            deleting.execute(text("DELETE FROM lists WHERE id = :id"), {"id": list_id})
        )
        await _wait_until_blocked(db, pid)
        await subscribing.commit()
        await delete
        await deleting.commit()
    assert await _count(db) == 0
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Subscriber))).scalar_one() == 500


async def _foreign_keys(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT conname FROM pg_constraint WHERE conrelid = 'subscriptions'::regclass "
                        "AND contype = 'f' ORDER BY conname"
                    )
                )
            ).scalars()
        )


# The tables as 0005 had them, without the workspace_id the models now write (migration 0010).
OLD_LIST = text(
    "INSERT INTO lists (name, description, optin, visibility, tags, created_at, updated_at) "
    "VALUES (:name, '', 'SINGLE', 'PRIVATE', '[]', :now, :now) RETURNING id"
)
OLD_PERSON = text(
    "INSERT INTO subscribers (email, name, attributes, status, created_at, updated_at) "
    "VALUES (:email, '', '{}', 'ENABLED', :now, :now) RETURNING id"
)
OLD_INSERT = text(
    "INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, updated_at) "
    "VALUES (:subscriber_id, :list_id, :status, :created_at, :updated_at)"
)


async def _old_list(db: Database, name: str) -> int:
    async with db.engine.begin() as conn:
        return int((await conn.execute(OLD_LIST, {"name": name, "now": NOW})).scalar_one())


async def _old_subscribers(db: Database, count: int) -> list[int]:
    async with db.engine.begin() as conn:
        return [
            int((await conn.execute(OLD_PERSON, {"email": f"p{i}@example.com", "now": NOW})).scalar_one())
            for i in range(count)
        ]


@pytest.mark.postgresql_only
async def test_migration_0006_drops_orphans_declares_the_keys_and_downgrades_to_the_triggers(
    db: Database,
) -> None:
    assert PG_URL is not None
    url = await create_scratch_database(PG_URL)
    scratch = Database(url, pool_size=2)
    try:
        await migrate.upgrade(scratch, "0005")
        people = await _old_subscribers(scratch, 2)
        kept, gone = await _old_list(scratch, "kept"), await _old_list(scratch, "gone")
        async with scratch.engine.begin() as conn:
            await conn.execute(OLD_INSERT, _rows([(people[0], kept), (people[0], gone), (people[1], kept)]))
            # What 0005's races left behind: parents deleted while their subscriptions stayed.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text("DELETE FROM lists WHERE id = :id"), {"id": gone})
            await conn.execute(text("DELETE FROM subscribers WHERE id = :id"), {"id": people[1]})
        assert await orphans(scratch) == 2

        await migrate.upgrade(scratch)
        assert await orphans(scratch) == 0
        async with scratch.engine.connect() as conn:
            left = (await conn.execute(select(Subscription.subscriber_id, Subscription.list_id))).all()
        assert [tuple(row) for row in left] == [(people[0], kept)]
        assert await _foreign_keys(scratch) == [
            "fk_subscriptions_list_id_lists",
            "fk_subscriptions_subscriber_id_subscribers",
        ]

        await migrate.downgrade(scratch, "0005")
        assert await _foreign_keys(scratch) == []
        # 0005's triggers are back: they refuse a missing list and cascade a delete.
        with pytest.raises(IntegrityError, match="fk_subscriptions_list_id_lists"):
            async with scratch.engine.begin() as conn:
                await conn.execute(OLD_INSERT, _rows([(people[0], kept + 100)]))
        async with scratch.engine.begin() as conn:
            await conn.execute(text("DELETE FROM lists WHERE id = :id"), {"id": kept})
        assert await _count(scratch) == 0
        await migrate.upgrade(scratch)
        assert len(await _foreign_keys(scratch)) == 2
    finally:
        await scratch.dispose()
        await drop_scratch_database(PG_URL, url)
