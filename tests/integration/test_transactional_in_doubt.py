"""A transactional job run again after its worker died while handing the message over: the delivery is IN_DOUBT,
and it is not sent a second time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.sending import scheduler, transactional
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE
from tests.support.transactional import outbox_runtime, receipts


async def test_a_rerun_after_a_death_in_the_hand_over_leaves_it_in_doubt(
    db: Database, tmp_path: Path
) -> None:
    runtime = outbox_runtime(db, tmp_path)
    handing_over, queued = await receipts(db, [DeliveryStatus.SENDING, DeliveryStatus.QUEUED])

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
    assert runtime.sending is not None
    await runtime.sending.close()
