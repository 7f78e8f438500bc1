"""The ledger writes of the send pipeline, which PostgreSQL runs as single array-parameter statements.

Run on both backends: the same assertions hold for SQLite's per-row statements and PostgreSQL's
one-statement paths (INSERT ... SELECT FROM unnest, UPDATE ... FROM unnest, the SENDING hand-over CTE), and
for the portable ledger's statements on PostgreSQL too (on SQLite it is the one chosen anyway).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.sending import BatchStatus, Campaign, CampaignBatch, Delivery, DeliveryStatus
from emailkit.domain.sending.ledger import LeaseLost, PortableLedger
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import make_sender, seed, start

LEDGERS = pytest.mark.parametrize(
    "ledger", ["chosen", pytest.param("portable", marks=pytest.mark.postgresql_only)]
)


async def _claimed(
    db: Database, tmp_path: Path, ledger: str
) -> tuple[CampaignSender, CampaignBatch, dict[str, int]]:
    campaign_id, _ = await seed(db, n=6)
    sender = make_sender(db, OutboxProvider(tmp_path))
    if ledger == "portable":
        sender.ledger = PortableLedger(db, provider_name="outbox", lease_seconds=sender.config.lease_seconds)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    batch = await sender.ledger.claim(batch_id)
    assert batch is not None
    async with db.transaction() as s:
        skipped = await sender.ledger.materialise(s, batch)
        # Idempotent: materialising again adds nobody and counts no skip twice.
        assert await sender.ledger.materialise(s, batch) == 0
    assert skipped == 3  # blocklisted, unsubscribed, unconfirmed
    async with db.session() as s:
        ids = {d.email: d.id for d in (await s.execute(select(Delivery))).scalars()}
    return sender, batch, ids


@LEDGERS
@pytest.mark.parametrize("lent", [False, True], ids=["own-connection", "lent-connection"])
async def test_hand_over_marks_queued_rows_and_stops_once_the_batch_is_taken_over(
    db: Database, tmp_path: Path, lent: bool, ledger: str
) -> None:
    sender, batch, ids = await _claimed(db, tmp_path, ledger)
    first, second, third = ids["user000@example.com"], ids["user001@example.com"], ids["user002@example.com"]
    skipped = ids["user003@example.com"]

    async def hand_over(delivery_ids: list[int]) -> None:
        if lent:
            async with sender.ledger.lend_connection(batch):
                await sender.ledger.mark_sending(batch, [str(i) for i in delivery_ids])
        else:
            await sender.ledger.mark_sending(batch, [str(i) for i in delivery_ids])

    await hand_over([first, skipped])
    # Committed at once: another session sees it, and a SKIPPED row is never turned into SENDING.
    async with db.session() as s:
        rows = {d.id: d for d in (await s.execute(select(Delivery))).scalars()}
    assert rows[first].status is DeliveryStatus.SENDING and rows[first].provider == "outbox"
    assert rows[skipped].status is DeliveryStatus.SKIPPED
    assert rows[second].status is DeliveryStatus.QUEUED
    await hand_over([first, second])  # a retried hand-over of `first` changes nothing

    # Another worker takes the batch over: this one may hand over nothing more.
    async with db.transaction() as s:
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch.id)
            .values(attempts=CampaignBatch.attempts + 1)
        )
    with pytest.raises(LeaseLost):
        await hand_over([third])
    # Nor may it give the batch back or mark it done under the new owner.
    for done in (False, True):
        await sender.ledger.release(batch, done=done)
        async with db.session() as s:
            row = await s.get(CampaignBatch, batch.id)
        assert row is not None and row.status is BatchStatus.RUNNING
    async with db.session() as s:
        statuses = {d.id: d.status for d in (await s.execute(select(Delivery))).scalars()}
    assert (statuses[first], statuses[second], statuses[third]) == (
        DeliveryStatus.SENDING,
        DeliveryStatus.SENDING,
        DeliveryStatus.QUEUED,
    )


@LEDGERS
async def test_sent_rows_carry_the_provider_id_attempt_and_time(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    sender, batch, ids = await _claimed(db, tmp_path, ledger)
    outcome = await sender.run_batch(batch.id)
    # The batch was claimed above with a lease still running, so this run cannot take it over.
    assert outcome.claimed is False
    async with db.transaction() as s:
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch.id)
            .values(status=BatchStatus.PENDING, lease_until=None)
        )
    outcome = await sender.run_batch(batch.id)
    assert outcome.done and outcome.sent == 4
    async with db.session() as s:
        rows = {d.email: d for d in (await s.execute(select(Delivery))).scalars()}
    for email in ("user000@example.com", "user001@example.com", "user002@example.com", "user004@example.com"):
        row = rows[email]
        assert row.status is DeliveryStatus.SENT
        assert row.provider_message_id and row.provider_message_id.startswith(f"{row.id}.")
        assert row.attempts == 1 and row.last_error is None
        assert row.sent_at is not None and row.sent_at == row.updated_at
    assert rows["user003@example.com"].skip_reason == "blocklisted"
    assert rows["user005@example.com"].skip_reason == "unsubscribed"
    assert rows["pending@example.com"].skip_reason == "unconfirmed"
    assert ids.keys() == rows.keys()
    async with db.session() as s:
        campaign = await s.get(Campaign, batch.campaign_id)
    assert campaign is not None
    assert (campaign.sent_count, campaign.failed_count, campaign.skipped_count) == (4, 0, 3)
