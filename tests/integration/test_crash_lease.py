"""A worker presumed dead (its lease ran out) while it is in fact still sending: the batch is taken over,
and the old worker hands over nothing more, so nobody is mailed twice and the counters stay right.

Two CampaignSenders in this process stand for the two workers, each with its own SMTP connections to a
counting sink. The first one stalls inside the hand-over of a message (as a worker stuck in a long GC
pause or cut off from the database would); the test expires its lease and lets the second one take over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.outbox import OutboxProvider
from emailkit.providers.smtp import SmtpProvider, parse_smtp_url
from tests.support.audience import seed_campaign
from tests.support.smtp_sink import CountingSink

pytestmark = pytest.mark.crash

RECIPIENTS = 120


def sender(db: Database, sink: CountingSink) -> CampaignSender:
    provider = SmtpProvider(parse_smtp_url(sink.url), pool_size=2)
    urls = TrackingUrls("https://mail.crash.test", TokenSigner("lease-test-secret-0123456789"))
    return CampaignSender(db, provider, "smtp", urls, config=SendingConfig(lease_seconds=60, chunk_size=50))


async def expire_lease(db: Database, batch_id: int) -> None:
    """The batch's worker is presumed dead: its lease ran out, so the next claim takes the batch over."""
    async with db.transaction() as s:
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


async def ledger_of(db: Database, campaign_id: int, key: Any) -> tuple[Campaign, dict[Any, DeliveryStatus]]:
    """The campaign row and each delivery's status, keyed by the `key` column."""
    async with db.session() as s:
        campaign = await s.get(Campaign, campaign_id)
        assert campaign is not None
        rows = await s.execute(select(key, Delivery.status).where(Delivery.campaign_id == campaign_id))
        return campaign, {k: status for k, status in rows.all()}


async def test_a_worker_whose_batch_was_taken_over_hands_over_nothing_more(db: Database) -> None:
    sink = CountingSink()
    sink.start()
    old, new = sender(db, sink), sender(db, sink)
    try:
        campaign_id, emails = await seed_campaign(db, RECIPIENTS)
        async with db.transaction() as s:
            _, [batch_id] = await lifecycle.start_campaign(s, campaign_id, batch_size=1000)

        stalled, resume = asyncio.Event(), asyncio.Event()
        hand_overs = 0
        mark_sending = old.ledger.mark_sending

        async def stalling(batch: CampaignBatch, ids: list[str]) -> None:
            nonlocal hand_overs
            hand_overs += 1
            if hand_overs == 10:
                stalled.set()
                await resume.wait()
            await mark_sending(batch, ids)

        old.ledger.mark_sending = stalling  # type: ignore[method-assign]
        running = asyncio.create_task(old.run_batch(batch_id))
        await asyncio.wait_for(stalled.wait(), 30)
        sent_before = sink.accepted_total
        assert 0 < sent_before < RECIPIENTS

        # Presumed dead: the lease runs out and another worker claims the batch and completes it.
        await expire_lease(db, batch_id)
        taken_over = await new.run_batch(batch_id)
        assert taken_over.claimed and taken_over.done and taken_over.campaign_finished

        # The old worker wakes up: it may not hand over the messages it was about to.
        resume.set()
        outcome = await asyncio.wait_for(running, 30)
        assert outcome.claimed and not outcome.done

        accepted = sink.accepted()
        assert set(accepted) == set(emails)
        assert max(accepted.values()) == 1
        campaign, statuses = await ledger_of(db, campaign_id, Delivery.email)
        # What the old worker had handed over before it stalled was SENDING (SMTP records per chunk): the
        # new owner could not know it arrived, so it is in doubt, neither sent again nor counted as sent.
        in_doubt = {e for e, st in statuses.items() if st is DeliveryStatus.IN_DOUBT}
        sent = {e for e, st in statuses.items() if st is DeliveryStatus.SENT}
        assert 0 < len(in_doubt) <= 50  # one chunk
        assert sent | in_doubt == set(emails) and not sent & in_doubt
        assert campaign.status is CampaignStatus.FINISHED
        assert (campaign.sent_count, campaign.in_doubt_count, campaign.failed_count) == (
            len(sent),
            len(in_doubt),
            0,
        )
    finally:
        await old.provider.close()
        await new.provider.close()
        sink.stop()


async def test_a_result_that_arrives_after_a_takeover_stays_in_doubt(db: Database, tmp_path: Path) -> None:
    """The old worker's request was in flight when its batch was taken over; it then succeeds. The new owner
    had already made those recipients IN_DOUBT: they stay so, and are not counted as sent on top."""
    urls = TrackingUrls("https://mail.crash.test", TokenSigner("lease-test-secret-0123456789"))
    config = SendingConfig(lease_seconds=60, chunk_size=10)
    old = CampaignSender(db, OutboxProvider(tmp_path / "old"), "outbox", urls, config=config)
    new = CampaignSender(db, OutboxProvider(tmp_path / "new"), "outbox", urls, config=config)
    campaign_id, _ = await seed_campaign(db, 30)
    async with db.transaction() as s:
        _, [batch_id] = await lifecycle.start_campaign(s, campaign_id, batch_size=1000)

    in_flight, resume = asyncio.Event(), asyncio.Event()
    commits = 0
    mark_sending = old.ledger.mark_sending

    async def then_hang(batch: CampaignBatch, ids: list[str]) -> None:
        nonlocal commits
        await mark_sending(batch, ids)
        commits += 1
        if commits == 2:  # the second chunk is committed and its request hangs
            in_flight.set()
            await resume.wait()

    old.ledger.mark_sending = then_hang  # type: ignore[method-assign]
    running = asyncio.create_task(old.run_batch(batch_id))
    await asyncio.wait_for(in_flight.wait(), 30)
    await expire_lease(db, batch_id)
    taken_over = await new.run_batch(batch_id)
    assert taken_over.claimed and taken_over.in_doubt == 10 and taken_over.campaign_finished
    resume.set()
    await asyncio.wait_for(running, 30)

    old_files = {p.stem for p in (tmp_path / "old").glob("*.eml")}
    new_files = {p.stem for p in (tmp_path / "new").glob("*.eml")}
    assert (len(old_files), len(new_files)) == (20, 10) and not old_files & new_files
    campaign, statuses = await ledger_of(db, campaign_id, Delivery.id)
    in_doubt = {str(i) for i, st in statuses.items() if st is DeliveryStatus.IN_DOUBT}
    sent = {str(i) for i, st in statuses.items() if st is DeliveryStatus.SENT}
    # The late request did deliver (its files are there), but only the ledger's IN_DOUBT says so.
    assert len(in_doubt) == 10 and in_doubt <= old_files
    assert sent == (old_files - in_doubt) | new_files
    assert (campaign.sent_count, campaign.in_doubt_count, campaign.status) == (
        20,
        10,
        CampaignStatus.FINISHED,
    )


async def test_a_worker_whose_batch_was_taken_over_renews_no_lease(db: Database, tmp_path: Path) -> None:
    """The old worker's lease keeper and chunk reads renew only its own claim's lease: never the new owner's,
    and never one on a batch the new owner has finished."""
    urls = TrackingUrls("https://mail.crash.test", TokenSigner("lease-test-secret-0123456789"))
    config = SendingConfig(lease_seconds=60, chunk_size=10)
    old = CampaignSender(db, OutboxProvider(tmp_path / "old"), "outbox", urls, config=config)
    new = CampaignSender(db, OutboxProvider(tmp_path / "new"), "outbox", urls, config=config)
    campaign_id, _ = await seed_campaign(db, 20)
    async with db.transaction() as s:
        _, [batch_id] = await lifecycle.start_campaign(s, campaign_id, batch_size=1000)

    async def lease() -> tuple[BatchStatus, Any]:
        async with db.session() as s:
            row = (
                await s.execute(
                    select(CampaignBatch.status, CampaignBatch.lease_until).where(
                        CampaignBatch.id == batch_id
                    )
                )
            ).one()
            return row.status, row.lease_until

    stale = await old.ledger.claim(batch_id)
    assert stale is not None and await old.ledger.extend_lease(stale)
    await expire_lease(db, batch_id)
    taken = await new.ledger.claim(batch_id)
    assert taken is not None and taken.attempts == stale.attempts + 1
    owners = await lease()

    assert not await old.ledger.extend_lease(stale)
    async with old.ledger.lend_connection(stale):
        await old.ledger.next_chunk(stale, 0, 10)
    assert await lease() == owners

    await new.ledger.release(taken, done=True)
    assert not await old.ledger.extend_lease(stale)
    async with old.ledger.lend_connection(stale):
        await old.ledger.next_chunk(stale, 0, 10)
    assert await lease() == (BatchStatus.DONE, None)
