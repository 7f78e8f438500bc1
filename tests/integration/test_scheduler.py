"""The scheduler's upkeep: due campaigns start, batches whose queue messages were lost are enqueued again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import Select, select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import BatchStatus, Campaign, CampaignBatch, CampaignList, CampaignStatus
from emailkit.domain.ports.queue import JobArg
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import dispatch, lifecycle, scheduler
from tests.support.environment import TEST_SECRET
from tests.support.races import default_isolation, wait_until_blocked

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
R = TypeVar("R")


class RecordingQueue:
    """A JobQueue that keeps what was enqueued, so a test can see exactly which batches were handed over."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, dict[str, JobArg]]] = []

    async def enqueue(
        self, job: str, args: Mapping[str, JobArg] | None = None, *, delay: float | None = None
    ) -> None:
        self.jobs.append((job, dict(args or {})))

    def batch_ids(self) -> list[int]:
        return sorted(int(a["batch_id"]) for j, a in self.jobs if j == dispatch.SEND_BATCH_JOB)  # type: ignore[arg-type]


async def make_campaign(db: Database, subscribers: int = 25) -> int:
    async with db.transaction() as s:
        lst = MailingList(name="L")
        s.add(lst)
        await s.flush()
        for i in range(subscribers):
            sub = Subscriber(email=f"s{i}@example.com")
            s.add(sub)
            await s.flush()
            s.add(Subscription(subscriber_id=sub.id, list_id=lst.id))
        campaign = Campaign(
            name="C", subject="S", from_email="a@example.com", body="<p>x</p>", format=ContentFormat.HTML
        )
        s.add(campaign)
        await s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id


def runtime_for(db: Database, queue: RecordingQueue) -> Runtime:
    return Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=queue)


async def test_a_due_scheduled_campaign_starts_and_its_batches_are_enqueued(db: Database) -> None:
    campaign_id = await make_campaign(db)
    async with db.transaction() as s:
        await lifecycle.schedule_campaign(s, campaign_id, NOW + timedelta(seconds=30), now=NOW)
    queue = RecordingQueue()
    runtime = runtime_for(db, queue)

    await scheduler.tick(runtime, NOW)  # not yet due
    assert queue.jobs == []
    await scheduler.tick(runtime, NOW + timedelta(seconds=31))
    async with db.session() as s:
        campaign = await s.get(Campaign, campaign_id)
        batches = list((await s.execute(select(CampaignBatch.id))).scalars())
    assert campaign is not None and campaign.status is CampaignStatus.RUNNING
    assert queue.batch_ids() == sorted(batches) and len(batches) == 1


async def test_lost_batches_are_enqueued_again_once_per_interval(db: Database) -> None:
    campaign_id = await make_campaign(db, subscribers=30)
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=10, now=NOW)
    queue = RecordingQueue()
    runtime = runtime_for(db, queue)

    await scheduler.requeue_stale_batches(runtime, NOW + timedelta(seconds=30), requeue_after=60)
    assert queue.jobs == []  # enqueued at start, not stale yet
    later = NOW + timedelta(seconds=61)
    assert sorted(await scheduler.requeue_stale_batches(runtime, later, requeue_after=60)) == sorted(
        batch_ids
    )
    # The winner moved enqueued_at forward: a second ticker right after finds nothing to do.
    assert await scheduler.requeue_stale_batches(runtime, later, requeue_after=60) == []
    assert queue.batch_ids() == sorted(batch_ids)


async def test_waiting_batches_of_a_busy_campaign_are_left_alone_but_dead_leases_are_taken_over(
    db: Database,
) -> None:
    campaign_id = await make_campaign(db, subscribers=30)
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=10, now=NOW)
    first, *waiting = batch_ids
    later = NOW + timedelta(minutes=5)
    async with db.transaction() as s:
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == first)
            .values(status=BatchStatus.RUNNING, lease_until=later + timedelta(seconds=60))
        )
    queue = RecordingQueue()
    runtime = runtime_for(db, queue)
    # A worker holds a live lease: the others are just queued behind it.
    assert await scheduler.requeue_stale_batches(runtime, later, requeue_after=60) == []

    # The worker died: its lease expired, so its batch and the waiting ones are enqueued again.
    dead = later + timedelta(seconds=61)
    assert sorted(await scheduler.requeue_stale_batches(runtime, dead, requeue_after=60)) == sorted(
        [first, *waiting]
    )


async def test_paused_campaigns_are_not_requeued(db: Database) -> None:
    campaign_id = await make_campaign(db)
    async with db.transaction() as s:
        await lifecycle.start_campaign(s, campaign_id, batch_size=10, now=NOW)
        await lifecycle.pause_campaign(s, campaign_id)
    queue = RecordingQueue()
    assert await scheduler.requeue_stale_batches(runtime_for(db, queue), NOW + timedelta(hours=1), 60) == []


async def _two_tickers(
    db: Database, level: str, held: Select[tuple[int]], step: Callable[[Database], Awaitable[R]]
) -> list[R]:
    """`step` run by two tickers at once, on sessions that default to isolation `level`: the rows `held`
    selects stay locked until both tickers wait for them, so each read them before the other wrote."""
    async with default_isolation(db, level) as other:
        async with db.transaction() as s:
            await s.execute(held.with_for_update())
            tickers = [asyncio.ensure_future(step(other)) for _ in range(2)]
            await wait_until_blocked(db, waiting=tickers[0], backends=2)
        return list(await asyncio.gather(*tickers))


@pytest.mark.postgresql_only
@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
async def test_two_tickers_at_once_enqueue_each_stale_batch_once(db: Database, level: str) -> None:
    """The loser waits for the winner's claim: above READ COMMITTED its claim is refused and run again, and
    finds nothing left to claim. Either way the batches are enqueued once."""
    campaign_id = await make_campaign(db, subscribers=30)
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=10, now=NOW)
    queue = RecordingQueue()
    later = NOW + timedelta(seconds=61)

    won = await _two_tickers(
        db,
        level,
        select(CampaignBatch.id),
        lambda other: scheduler.requeue_stale_batches(runtime_for(other, queue), later, requeue_after=60),
    )

    assert sorted(sorted(w) for w in won) == [[], sorted(batch_ids)]
    assert queue.batch_ids() == sorted(batch_ids)


@pytest.mark.postgresql_only
@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
async def test_two_tickers_at_once_start_a_due_campaign_once(db: Database, level: str) -> None:
    """The loser finds the campaign started (above READ COMMITTED after its refused start is run again), and
    leaves it RUNNING."""
    campaign_id = await make_campaign(db)
    async with db.transaction() as s:
        await lifecycle.schedule_campaign(s, campaign_id, NOW + timedelta(seconds=30), now=NOW)
    queue = RecordingQueue()

    started = await _two_tickers(
        db,
        level,
        select(Campaign.id),
        lambda other: scheduler.start_due_campaigns(runtime_for(other, queue), NOW + timedelta(seconds=31)),
    )

    assert sorted(started) == [[], [campaign_id]]
    async with db.session() as s:
        campaign = await s.get(Campaign, campaign_id)
        batches = list((await s.execute(select(CampaignBatch.id))).scalars())
    assert campaign is not None and (campaign.status, campaign.status_reason) == (
        CampaignStatus.RUNNING,
        None,
    )
    assert queue.batch_ids() == sorted(batches) and len(batches) == 1
