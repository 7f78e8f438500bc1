"""Migration 0010 on a database with data: every existing row moves into the default workspace, existing keys
belong to it, an address becomes unique per workspace, and the downgrade gives the single-tenant schema back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.base import Base
from tests.integration.test_migrations import empty_db  # noqa: F401  (fixture)

ROWS = [
    "INSERT INTO api_keys (id, name, role, prefix, key_hash, created_at) VALUES (1, 'k', 'ADMIN', 'ek_x', 'h', :now)",
    "INSERT INTO subscribers (id, email, name, attributes, status, created_at, updated_at) "
    "VALUES (1, 'ada@example.com', 'Ada', '{}', 'ENABLED', :now, :now)",
    "INSERT INTO lists (id, name, description, optin, visibility, tags, created_at, updated_at) "
    "VALUES (1, 'News', '', 'SINGLE', 'PRIVATE', '[]', :now, :now)",
    "INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, updated_at) "
    "VALUES (1, 1, 'CONFIRMED', :now, :now)",
    "INSERT INTO templates (id, name, kind, format, subject, body, created_at, updated_at) "
    "VALUES (1, 't', 'CAMPAIGN', 'HTML', 's', '<p>hi</p>', :now, :now)",
    "INSERT INTO campaigns (id, name, subject, status, from_email, from_name, track_opens, track_clicks, "
    "recipients_count, sent_count, failed_count, skipped_count, in_doubt_count, template_id, created_at, updated_at) "
    "VALUES (1, 'c', 's', 'FINISHED', 'a@example.com', '', true, true, 1, 1, 0, 0, 0, 1, :now, :now)",
    "INSERT INTO campaign_lists (campaign_id, list_id) VALUES (1, 1)",
    "INSERT INTO deliveries (id, campaign_id, subscriber_id, email, status, attempts, created_at, updated_at, sent_at) "
    "VALUES (1, 1, 1, 'ada@example.com', 'SENT', 1, :now, :now, :now)",
    "INSERT INTO suppressions (id, email, email_hash, reason, source, created_at) "
    "VALUES (1, 'bob@example.com', 'abc', 'MANUAL', 'api', :now)",
    "INSERT INTO events (occurred_at, recorded_at, type, provider, email, campaign_id, delivery_id, subscriber_id) "
    "VALUES (:now, :now, 'OPEN', 'tracking', 'ada@example.com', 1, 1, 1)",
    "INSERT INTO campaign_stats (campaign_id, delivered, bounced, complained, opens, unique_opens, clicks, "
    "unique_clicks, unsubscribed, updated_at) VALUES (1, 1, 0, 0, 1, 1, 0, 0, 0, :now)",
]
TENANT_TABLES = [
    t.name for t in Base.metadata.sorted_tables if "workspace_id" in t.c and t.name != "api_keys"
]


async def test_existing_rows_move_into_the_default_workspace(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    await migrate.upgrade(db, "0009")
    now = datetime.now(UTC)
    async with db.engine.begin() as conn:
        for statement in ROWS:
            await conn.execute(text(statement), {"now": now})
    await migrate.upgrade(db)

    async with db.engine.begin() as conn:
        assert (await conn.execute(text("SELECT id, slug, status FROM workspaces"))).all() == [
            (1, "default", "ACTIVE")
        ]
        assert (await conn.execute(text("SELECT workspace_id FROM api_keys"))).scalars().all() == [1]
        for table in TENANT_TABLES:
            found = set((await conn.execute(text(f"SELECT workspace_id FROM {table}"))).scalars())
            assert found <= {1}, table
        assert (await conn.execute(text("SELECT count(*) FROM subscriptions"))).scalar() == 1
        # The same address may now be a subscriber of another workspace, not twice in one.
        await conn.execute(
            text(
                "INSERT INTO workspaces (id, name, slug, status, branding, created_at, updated_at) "
                "VALUES (2, 'B', 'b', 'ACTIVE', '{}', :now, :now)"
            ),
            {"now": now},
        )
        insert = (
            "INSERT INTO subscribers (id, email, name, attributes, status, workspace_id, created_at, updated_at) "
            "VALUES (:w + 1, 'ada@example.com', '', '{}', 'ENABLED', :w, :now, :now)"
        )
        await conn.execute(text(insert), {"w": 2, "now": now})
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with db.engine.begin() as conn:
            await conn.execute(text(insert.replace(":w + 1", "9")), {"w": 1, "now": now})

    await migrate.downgrade(db, "0009")
    async with db.engine.connect() as conn:
        # Workspace 2's rows cannot fit the single-tenant schema: the downgrade keeps the default workspace's.
        assert (await conn.execute(text("SELECT id, email FROM subscribers ORDER BY id"))).all() == [
            (1, "ada@example.com")
        ]
        assert (await conn.execute(text("SELECT count(*) FROM subscriptions"))).scalar() == 1
        assert (await conn.execute(text("SELECT count(*) FROM deliveries"))).scalar() == 1
    await migrate.upgrade(db)
