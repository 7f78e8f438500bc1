"""Monthly partitions of ``events`` on PostgreSQL, created ahead of time.

The parent table is range-partitioned on ``occurred_at``. A DEFAULT partition catches what no monthly
partition covers (provider payloads with old or far-future timestamps), so an insert never fails for
want of a partition. Partitions live in their own schema, :data:`PARTITION_SCHEMA`, so that comparing the
application's schema with its models (``alembic compare_metadata``) sees only the parent table.

:func:`ensure_event_partitions` is idempotent and cheap when nothing is missing: the migration calls it
(through :func:`partition_statements`) and a periodic task should call :func:`maintain_event_partitions`,
e.g. daily, which also prunes old dedupe keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.db import rls
from emailkit.db.dialect import dialect_of
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.feedback import CampaignFirst, CustomEventKey, EventKey

log = logging.getLogger(__name__)

PARENT = "events"
PARTITION_SCHEMA = "emailkit_events"
DEFAULT_PARTITION = "events_default"
MONTHS_AHEAD = 3
KEY_RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class MonthPartition:
    start: date

    @property
    def end(self) -> date:
        return add_months(self.start, 1)

    @property
    def name(self) -> str:
        return f"{PARENT}_{self.start:%Y_%m}"

    @property
    def qualified(self) -> str:
        return f'"{PARTITION_SCHEMA}"."{self.name}"'

    @property
    def bounds(self) -> str:
        return f"FROM ('{self.start.isoformat()} 00:00:00+00') TO ('{self.end.isoformat()} 00:00:00+00')"


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def months_from(now: datetime, ahead: int = MONTHS_AHEAD) -> list[MonthPartition]:
    """The current month (in UTC) and the ``ahead`` following ones."""
    current = now.astimezone(UTC).date().replace(day=1)
    return [MonthPartition(add_months(current, i)) for i in range(ahead + 1)]


def setup_statements() -> list[str]:
    """The partition schema and the DEFAULT partition (the parent must exist)."""
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{PARTITION_SCHEMA}"',
        f'CREATE TABLE IF NOT EXISTS "{PARTITION_SCHEMA}"."{DEFAULT_PARTITION}" PARTITION OF {PARENT} DEFAULT',
    ]


def partition_statements(now: datetime, ahead: int = MONTHS_AHEAD) -> list[str]:
    """DDL for the monthly partitions from ``now``'s month on; valid only while the DEFAULT partition holds
    no row of those months (true right after the table is created)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {p.qualified} PARTITION OF {PARENT} FOR VALUES {p.bounds}"
        for p in months_from(now, ahead)
    ]


async def existing_partitions(conn: AsyncConnection) -> set[str]:
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :parent AND pg_table_is_visible(p.oid)"
        ),
        {"parent": PARENT},
    )
    return {str(name) for name in rows.scalars()}


async def ensure_event_partitions(
    conn: AsyncConnection, now: datetime, ahead: int = MONTHS_AHEAD
) -> list[str]:
    """Create the missing monthly partitions for ``now``'s month and the ``ahead`` next ones.

    Returns the names created. A no-op on other databases. Rows that already sit in the DEFAULT partition
    for a month being created (a payload dated in the future) are moved into the new partition in the
    same transaction, since PostgreSQL refuses to create a partition that the DEFAULT one overlaps.
    """
    if dialect_of(conn) != "postgresql":
        return []
    existing = await existing_partitions(conn)
    created: list[str] = []
    for part in months_from(now, ahead):
        if part.name in existing:
            continue
        async with conn.begin_nested():
            await _create(conn, part)
        created.append(part.name)
    if created:
        log.info("created event partitions: %s", ", ".join(created))
    return created


async def _create(conn: AsyncConnection, part: MonthPartition) -> None:
    default = f'"{PARTITION_SCHEMA}"."{DEFAULT_PARTITION}"'
    # Only constants and dates are interpolated here, never outside input.
    in_range = (
        f"occurred_at >= '{part.start.isoformat()} 00:00:00+00' "
        f"AND occurred_at < '{part.end.isoformat()} 00:00:00+00'"
    )
    exists = f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {in_range})"  # noqa: S608
    stray = (await conn.execute(text(exists))).scalar()
    if not stray:
        await conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {part.qualified} PARTITION OF {PARENT} FOR VALUES {part.bounds}"
            )
        )
        await _secure(conn, part.qualified)
        return
    await conn.execute(
        text(f"CREATE TABLE {part.qualified} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    await conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {default} WHERE {in_range} RETURNING *) "  # noqa: S608
            f"INSERT INTO {part.qualified} SELECT * FROM moved"
        )
    )
    await conn.execute(
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {part.qualified} FOR VALUES {part.bounds}")
    )
    await _secure(conn, part.qualified)


async def _secure(conn: AsyncConnection, qualified: str) -> None:
    # A partition is a table of its own that a query could name directly: it gets the parent's policy.
    for statement in rls.secure_statements(qualified):
        await conn.execute(text(statement))


async def prune_event_keys(conn: AsyncConnection, now: datetime, keep: timedelta = KEY_RETENTION) -> int:
    """Forget dedupe keys older than ``keep``: providers stop retrying long before (SendGrid after 3 days,
    SNS within a day by default), and so do the systems that send custom events with an idempotency key
    (README, "Sending events"). Returns how many were removed."""
    removed = 0
    for table in (EventKey, CustomEventKey):
        result = await conn.execute(delete(table).where(table.seen_at < now - keep))
        removed += int(result.rowcount or 0)
    return removed


# Distinct campaign ids of the markers by a loose index scan (one index probe per campaign, not a table
# scan), keeping those whose campaign is gone.
_ORPHAN_MARKERS = text(
    """
    WITH RECURSIVE ids(campaign_id) AS (
        SELECT min(campaign_id) FROM campaign_firsts
        UNION ALL
        SELECT (SELECT min(f.campaign_id) FROM campaign_firsts f WHERE f.campaign_id > ids.campaign_id)
        FROM ids WHERE ids.campaign_id IS NOT NULL
    )
    SELECT campaign_id FROM ids
    WHERE campaign_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = ids.campaign_id)
    """
)


async def prune_orphan_markers(conn: AsyncConnection) -> int:
    """Remove the first-seen markers of deleted campaigns (the table has no foreign key to cascade)."""
    orphans = [int(cid) for cid in (await conn.execute(_ORPHAN_MARKERS)).scalars()]
    if not orphans:
        return 0
    result = await conn.execute(delete(CampaignFirst).where(CampaignFirst.campaign_id.in_(orphans)))
    return int(result.rowcount or 0)


async def maintain_event_partitions(db: Database, now: datetime | None = None) -> list[str]:
    """Periodic entry point (a scheduler tick; daily is plenty): the partitions of this month and the next
    three; old dedupe keys and the markers of deleted campaigns pruned. Returns the partitions created.

    Upkeep of the tables as a whole, for all workspaces (on PostgreSQL a narrower scope would hide other
    workspaces' markers from the pruning, and the rows the new partitions take over)."""
    now = now or datetime.now(UTC)
    with all_workspaces():
        async with db.engine.begin() as conn:
            created = await ensure_event_partitions(conn, now)
            pruned = await prune_event_keys(conn, now)
            orphans = await prune_orphan_markers(conn)
    if pruned or orphans:
        log.info("pruned %d event dedupe keys and %d markers of deleted campaigns", pruned, orphans)
    return created
