"""A transactional job run again after its worker died while handing the message over: the delivery is IN_DOUBT,
and it is not sent a second time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from emailkit.app import sending_setup
from emailkit.domain import scheduler, transactional
from emailkit.domain.db import Database
from emailkit.domain.models import ContentFormat, Delivery, DeliveryStatus, Template, TemplateKind
from emailkit.domain.pipeline import IN_DOUBT_NOTE
from emailkit.domain.runtime import Runtime
from emailkit.domain.types import utcnow
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET


async def test_a_rerun_after_a_death_in_the_hand_over_leaves_it_in_doubt(
    db: Database, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url="http://testserver",
        provider="outbox",
        data_dir=tmp_path,
    )
    setup = sending_setup(settings)
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", sending=setup)
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
            for i, status in enumerate([DeliveryStatus.SENDING, DeliveryStatus.QUEUED])
        ]
        s.add_all(rows)
        await s.flush()
        handing_over, queued = rows[0].id, rows[1].id

    assert await transactional.send_transactional(runtime, handing_over, max_attempts=3) is None
    result = await transactional.send_transactional(runtime, queued, max_attempts=3)
    assert result is not None and result.ok
    async with db.session() as s:
        doubtful = await s.get(Delivery, handing_over)
        sent = await s.get(Delivery, queued)
        assert doubtful is not None and sent is not None
        assert (doubtful.status, doubtful.last_error) == (DeliveryStatus.IN_DOUBT, IN_DOUBT_NOTE)
        assert sent.status is DeliveryStatus.SENT
    assert sorted(p.name for p in tmp_path.rglob("*.eml")) == [f"{queued}.eml"]
    # Never picked up again by the sweep of queued transactional mail.
    assert await scheduler.requeue_lost_transactional(runtime, utcnow() + timedelta(hours=1), 60) == []
    await setup.close()
