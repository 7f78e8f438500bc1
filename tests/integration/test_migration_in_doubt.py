"""Migration 0008: deliveries the old pipeline settled as sent "with a note" become IN_DOUBT, and their campaign's
counters move from sent to in doubt (and back on downgrade)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from emailkit import migrate
from emailkit.db.engine import Database
from tests.integration.test_migrations import empty_db  # noqa: F401  (fixture)

NOTE = "outcome unknown: the worker stopped while handing this message to the provider"


async def counters_and_statuses(db: Database) -> tuple[tuple[int, ...], list[tuple[str, str]]]:
    async with db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT sent_count, in_doubt_count FROM campaigns"))).one()
        deliveries = (await conn.execute(text("SELECT email, status FROM deliveries ORDER BY id"))).all()
    return tuple(row), [tuple(d) for d in deliveries]  # type: ignore[misc]


async def test_legacy_in_doubt_rows_are_moved_out_of_sent(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    await migrate.upgrade(db, "0007")
    now = datetime.now(UTC)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO campaigns (id, name, subject, status, from_email, from_name, track_opens, "
                "track_clicks, recipients_count, sent_count, failed_count, skipped_count, created_at, updated_at) "
                "VALUES (1, 'c', 's', 'FINISHED', 'a@example.com', '', true, true, 3, 3, 0, 0, :now, :now)"
            ),
            {"now": now},
        )
        for i, note in enumerate([None, NOTE, "an old provider error"]):
            await conn.execute(
                text(
                    "INSERT INTO deliveries (id, campaign_id, email, status, attempts, last_error, created_at, "
                    "updated_at, sent_at) VALUES (:id, 1, :email, 'SENT', 1, :note, :now, :now, :now)"
                ),
                {"id": i + 1, "email": f"r{i}@example.com", "note": note, "now": now},
            )
    await migrate.upgrade(db)
    assert await counters_and_statuses(db) == (
        (2, 1),
        [("r0@example.com", "SENT"), ("r1@example.com", "IN_DOUBT"), ("r2@example.com", "SENT")],
    )
    await migrate.downgrade(db, "0007")
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT sent_count FROM campaigns"))).scalars().all()
        statuses = (await conn.execute(text("SELECT status FROM deliveries"))).scalars().all()
    assert rows == [3] and set(statuses) == {"SENT"}
