"""Monthly partitions of `events` on PostgreSQL (a plain table on SQLite), and dedupe-key pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text

from emailkit.db.engine import Database
from emailkit.db.tables.feedback import CampaignFirst, Event, EventKey, EventType
from emailkit.db.tables.sending import Campaign
from emailkit.domain.feedback import IncomingEvent, maintain_event_partitions, record_events
from emailkit.domain.feedback.partitions import (
    DEFAULT_PARTITION,
    PARTITION_SCHEMA,
    add_months,
    ensure_event_partitions,
    existing_partitions,
    months_from,
)
from tests.support.feedback import seed_sent_campaign


def test_month_arithmetic() -> None:
    assert add_months(datetime(2026, 11, 1).date(), 3).isoformat() == "2027-02-01"
    assert add_months(datetime(2026, 1, 1).date(), -1).isoformat() == "2025-12-01"
    months = months_from(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    assert [m.name for m in months] == [
        "events_2026_12",
        "events_2027_01",
        "events_2027_02",
        "events_2027_03",
    ]
    assert months[0].bounds == "FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"


async def partitions(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await existing_partitions(conn)


async def where_is(db: Database, dedupe_key: str) -> str:
    async with db.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT tableoid::regclass::text FROM events WHERE dedupe_key = CAST(:k AS uuid)"),
            {"k": dedupe_key},
        )
        return str(row.scalar_one())


async def test_partitions_exist_ahead_and_are_created_on_demand(db: Database) -> None:
    now = datetime.now(UTC)
    if db.dialect != "postgresql":
        assert await maintain_event_partitions(db, now) == []
        return
    expected = {m.name for m in months_from(now)}
    assert expected | {DEFAULT_PARTITION} <= await partitions(db)
    # Nothing to do when everything is there.
    assert await maintain_event_partitions(db, now) == []

    later = now + timedelta(days=31 * 14)
    created = await maintain_event_partitions(db, later)
    assert set(created) == {m.name for m in months_from(later)} - expected
    assert set(created) <= await partitions(db)


async def test_rows_parked_in_the_default_partition_move_into_a_new_month(db: Database) -> None:
    if db.dialect != "postgresql":
        return
    far = datetime.now(UTC).replace(day=15) + timedelta(days=31 * 40)
    month = months_from(far, ahead=0)[0]
    assert month.name not in await partitions(db)
    key = "ab" * 16
    summary = await record_events(
        db, [IncomingEvent(EventType.OPEN, email="x@x.test", occurred_at=far, dedupe_key=key)]
    )
    assert summary.stored == 1
    assert await where_is(db, key) == f"{PARTITION_SCHEMA}.{DEFAULT_PARTITION}"

    async with db.engine.begin() as conn:
        assert await ensure_event_partitions(conn, far, ahead=0) == [month.name]
    assert await where_is(db, key) == f"{PARTITION_SCHEMA}.{month.name}"
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Event))).scalar() == 1
    # The moved row is still found through the parent's indexes, and its key still deduplicates.
    again = await record_events(
        db, [IncomingEvent(EventType.OPEN, email="x@x.test", occurred_at=far, dedupe_key=key)]
    )
    assert again.duplicates == 1


async def test_old_dedupe_keys_are_pruned(db: Database) -> None:
    now = datetime.now(UTC)
    old, recent = "0" * 32, "1" * 32
    await record_events(
        db, [IncomingEvent(EventType.OPEN, email="x@x.test", dedupe_key=old)], now=now - timedelta(days=40)
    )
    await record_events(db, [IncomingEvent(EventType.OPEN, email="x@x.test", dedupe_key=recent)], now=now)
    await maintain_event_partitions(db, now)
    async with db.session() as s:
        keys = {str(k).replace("-", "") for k in (await s.execute(select(EventKey.key))).scalars()}
    assert keys == {recent}


async def test_markers_of_deleted_campaigns_are_pruned(db: Database) -> None:
    gone = await seed_sent_campaign(db, ["a@x.test"])
    kept = await seed_sent_campaign(db, ["b@x.test"])
    await record_events(
        db,
        [
            IncomingEvent(EventType.OPEN, delivery_id=gone.deliveries["a@x.test"]),
            IncomingEvent(EventType.OPEN, delivery_id=kept.deliveries["b@x.test"]),
        ],
    )
    async with db.transaction() as s:
        await s.execute(delete(Campaign).where(Campaign.id == gone.campaign_id))
    await maintain_event_partitions(db)
    async with db.session() as s:
        left = (await s.execute(select(CampaignFirst.campaign_id))).scalars().all()
    assert left == [kept.campaign_id]
