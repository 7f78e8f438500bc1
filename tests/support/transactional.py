"""Transactional mail as `sendTransactional` leaves it, and a runtime that sends it to the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emailkit.app import sending_setup
from emailkit.db.engine import Database
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.domain.ports.queue import JobQueue
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET


async def receipts(db: Database, statuses: list[DeliveryStatus]) -> list[int]:
    """One receipt delivery per status (a TRANSACTIONAL template's rows, as sendTransactional commits them)."""
    async with db.transaction() as s:
        template = Template(
            name="receipt",
            kind=TemplateKind.TRANSACTIONAL,
            format=ContentFormat.HTML,
            subject="Receipt",
            body="<p>Thanks</p>",
        )
        s.add(template)
        await s.flush()
        rows = [
            Delivery(
                email=f"buyer{i}@example.com",
                template_id=template.id,
                data={"vars": {}, "from_email": "shop@example.com", "from_name": "Shop"},
                status=status,
            )
            for i, status in enumerate(statuses)
        ]
        s.add_all(rows)
        await s.flush()
        return [row.id for row in rows]


def outbox_runtime(db: Database, tmp_path: Path, queue: JobQueue | None = None, **more: Any) -> Runtime:
    """`more`: other settings (e.g. bounce_domain)."""
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url="http://testserver",
        provider="outbox",
        data_dir=tmp_path,
        **more,
    )
    return Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        sending=sending_setup(settings),
        jobs=queue,
    )
