"""The SQL statements of one campaign send through the outbox: how many, and which, per backend.

Prints every statement SQLAlchemy executes (its first 90 characters) with its count, for the pipeline test's
seed of 950 recipients, so that a change to the send path can be compared with the code before it (run it
with PYTHONPATH pointing at each checkout). PostgreSQL is the one named by EMAILKIT_TEST_DATABASE_URL, wiped.
The lent asyncpg connection's own statements (chunk read, SENDING mark, SENT record) are not counted.

    PYTHONPATH=. python bench/send_statements.py sqlite|postgresql [--recipients 950]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from emailkit.db.scope import workspace_scope
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import seed, start, statuses
from tests.support.database import fresh_database


async def main(backend: str, recipients: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    db = await fresh_database(backend, tmp)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split())[:90])

    with workspace_scope(DEFAULT_WORKSPACE_ID):
        campaign_id, _ = await seed(db, recipients)
        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        urls = TrackingUrls("https://mail.example.com", TokenSigner("x" * 32))
        sender = CampaignSender(db, OutboxProvider(tmp / "outbox"), "outbox", urls, config=SendingConfig())
        for batch_id in await start(db, campaign_id, batch_size=1000):
            await sender.run_batch(batch_id)
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        print(backend, await statuses(db, campaign_id), "statements:", len(statements))
    for statement, n in Counter(statements).most_common():
        print(f"  {n:3d}  {statement}")
    await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=["sqlite", "postgresql"])
    parser.add_argument("--recipients", type=int, default=950)
    args = parser.parse_args()
    asyncio.run(main(args.backend, args.recipients))
