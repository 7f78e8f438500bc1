"""Campaigns in local time across three timezones: each person gets the campaign when their own clock shows its
wall-clock time, the campaign starts with the first timezone and finishes with the last.

Time moves by an injected clock (the sender's) and the `now` the ticker is given: nothing sleeps. Run on both
backends and, on PostgreSQL, through the portable ledger too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignList,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.runtime import Runtime, SendingSetup
from emailkit.domain.sending import lifecycle, scheduler
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.ledger import PortableLedger
from emailkit.domain.sending.pipeline import BatchOutcome, CampaignSender
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import CountingProvider, make_sender
from tests.integration.test_scheduler import RecordingQueue
from tests.support.environment import TEST_SECRET

LEDGERS = pytest.mark.parametrize(
    "ledger", ["chosen", pytest.param("portable", marks=pytest.mark.postgresql_only)]
)

# 09:00 on 2 June 2031 (summer time): Tokyo is UTC+9, Paris UTC+2, New York UTC-4.
WALL = datetime(2031, 6, 2, 9, 0)
TOKYO = datetime(2031, 6, 2, 0, 0, tzinfo=UTC)
PARIS = datetime(2031, 6, 2, 7, 0, tzinfo=UTC)
NEW_YORK = datetime(2031, 6, 2, 13, 0, tzinfo=UTC)
SCHEDULED_ON = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
# In id order, so that each batch of two holds people of different timezones: who lives where.
PEOPLE: list[tuple[str, dict[str, Any]]] = [
    ("tokyo1", {"timezone": "Asia/Tokyo"}),
    ("paris", {}),  # no attribute: the list's default, Europe/Paris
    ("newyork", {"timezone": "America/New_York"}),
    # Stored by hand, past every check: at send time it falls back to the list's default, never fails.
    ("bogus", {"timezone": "Mars/Olympus_Mons"}),
    ("tokyo2", {"timezone": "Asia/Tokyo"}),
]
DUE = {"tokyo1": TOKYO, "tokyo2": TOKYO, "paris": PARIS, "bogus": PARIS, "newyork": NEW_YORK}


class Clock:
    """The sender's "now", moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def seed(db: Database) -> int:
    async with db.transaction() as s:
        lst = MailingList(name="World", default_timezone="Europe/Paris")
        s.add(lst)
        await s.flush()
        for name, attributes in PEOPLE:
            person = Subscriber(email=f"{name}@example.com", name=name, attributes=attributes)
            s.add(person)
            await s.flush()
            s.add(Subscription(subscriber_id=person.id, list_id=lst.id))
        campaign = Campaign(
            name="Morning", subject="Good morning", from_email="news@example.com", body="<p>Hi</p>"
        )
        campaign.format = ContentFormat.HTML
        s.add(campaign)
        await s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id


def local_sender(db: Database, tmp_path: Path, clock: Clock, ledger: str) -> CampaignSender:
    sender = make_sender(db, CountingProvider(OutboxProvider(tmp_path)))
    sender.clock = clock
    if ledger == "portable":
        sender.ledger = PortableLedger(db, provider_name="outbox", lease_seconds=sender.config.lease_seconds)
    return sender


async def open_batches(db: Database, campaign_id: int) -> list[int]:
    async with db.session() as s:
        stmt = select(CampaignBatch.id).where(
            CampaignBatch.campaign_id == campaign_id, CampaignBatch.status != BatchStatus.DONE
        )
        return sorted((await s.execute(stmt.order_by(CampaignBatch.lo_id))).scalars())


async def run_open_batches(db: Database, sender: CampaignSender, campaign_id: int) -> list[BatchOutcome]:
    return [await sender.run_batch(batch_id) for batch_id in await open_batches(db, campaign_id)]


async def campaign(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row


async def deliveries(db: Database, campaign_id: int) -> Mapping[str, Delivery]:
    async with db.session() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.campaign_id == campaign_id))).scalars()
        return {d.email.split("@")[0]: d for d in rows}


def sent_to(sender: CampaignSender) -> list[str]:
    provider = sender.provider
    assert isinstance(provider, CountingProvider)
    return sorted(address.split("@")[0] for address in provider.sent_to)


async def schedule(db: Database, campaign_id: int, send_at: datetime) -> Campaign:
    async with db.transaction() as s:
        return await lifecycle.schedule_campaign(
            s, campaign_id, send_at, now=SCHEDULED_ON, local=True, default_timezone="UTC"
        )


@LEDGERS
async def test_each_timezone_gets_the_campaign_at_its_own_nine_o_clock(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    campaign_id = await seed(db)
    # The offset says nothing about where: 09:00 is read on every recipient's own clock.
    scheduled = await schedule(db, campaign_id, WALL.replace(tzinfo=timezone(timedelta(hours=5))))
    assert scheduled.local_send_at == WALL
    assert scheduled.send_at == TOKYO  # the first timezone of the audience

    queue = RecordingQueue()
    runtime = Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        jobs=queue,
        sending=SendingSetup(
            provider_name="outbox",
            provider_factory=lambda: OutboxProvider(tmp_path),
            config=SendingConfig(batch_size=2),
        ),
    )
    await scheduler.tick(runtime, TOKYO - timedelta(seconds=1))
    assert (await campaign(db, campaign_id)).status is CampaignStatus.SCHEDULED
    await scheduler.tick(runtime, TOKYO)
    started = await campaign(db, campaign_id)
    assert started.status is CampaignStatus.RUNNING and started.started_at == TOKYO
    assert started.local_send_until == NEW_YORK
    assert started.status_reason is not None
    assert "waiting for later timezones until 2031-06-02 13:00:00 UTC" in started.status_reason
    assert len(queue.batch_ids()) == 3

    clock = Clock(TOKYO)
    sender = local_sender(db, tmp_path, clock, ledger)
    outcomes = await run_open_batches(db, sender, campaign_id)
    assert sent_to(sender) == ["tokyo1", "tokyo2"]
    # Each batch comes back when its next person is due: [tokyo1, paris] and [newyork, bogus] at Paris's
    # nine o'clock; [tokyo2] is done.
    assert [o.retry_after for o in outcomes] == [7 * 3600, 7 * 3600, None]
    assert [o.done for o in outcomes] == [False, False, True]
    ledger_rows = await deliveries(db, campaign_id)
    assert {name: d.not_before for name, d in ledger_rows.items()} == DUE
    assert (await campaign(db, campaign_id)).status is CampaignStatus.RUNNING

    # A run that comes early (a redelivered message) sends nobody ahead of time.
    clock.now = PARIS - timedelta(minutes=1)
    early = await run_open_batches(db, sender, campaign_id)
    assert sent_to(sender) == ["tokyo1", "tokyo2"]
    assert [o.retry_after for o in early] == [60, 60]

    clock.now = PARIS
    outcomes = await run_open_batches(db, sender, campaign_id)
    assert sent_to(sender) == ["bogus", "paris", "tokyo1", "tokyo2"]
    assert [o.retry_after for o in outcomes] == [None, 6 * 3600]
    waiting = await campaign(db, campaign_id)
    assert waiting.status is CampaignStatus.RUNNING and waiting.sent_count == 4

    clock.now = NEW_YORK + timedelta(seconds=5)
    [last] = await run_open_batches(db, sender, campaign_id)
    assert last.done and last.campaign_finished
    assert sent_to(sender) == ["bogus", "newyork", "paris", "tokyo1", "tokyo2"]  # each once
    finished = await campaign(db, campaign_id)
    assert finished.status is CampaignStatus.FINISHED and finished.status_reason is None
    assert finished.sent_count == 5
    ledger_rows = await deliveries(db, campaign_id)
    assert all(d.status is DeliveryStatus.SENT for d in ledger_rows.values())


async def test_a_person_whose_time_has_passed_at_the_start_gets_it_at_once(
    db: Database, tmp_path: Path
) -> None:
    campaign_id = await seed(db)
    await schedule(db, campaign_id, WALL)  # no offset: a wall-clock time as it is
    async with db.transaction() as s:
        await lifecycle.start_campaign(s, campaign_id, batch_size=100, now=PARIS, default_timezone="UTC")
    clock = Clock(PARIS)
    sender = local_sender(db, tmp_path, clock, "chosen")
    [outcome] = await run_open_batches(db, sender, campaign_id)
    # Started late (startCampaign by hand at Paris's nine o'clock): Tokyo's is past, so they get it now.
    assert sent_to(sender) == ["bogus", "paris", "tokyo1", "tokyo2"]
    assert outcome.retry_after == 6 * 3600


async def test_a_list_without_a_default_and_people_without_a_zone_use_the_instance_default(
    db: Database, tmp_path: Path
) -> None:
    campaign_id = await seed(db)
    async with db.transaction() as s:
        lst = (await s.execute(select(MailingList))).scalar_one()
        lst.default_timezone = None
        await lifecycle.schedule_campaign(
            s, campaign_id, WALL, now=SCHEDULED_ON, local=True, default_timezone="America/Los_Angeles"
        )
        await lifecycle.start_campaign(
            s, campaign_id, batch_size=100, now=TOKYO, default_timezone="America/Los_Angeles"
        )
    sender = local_sender(db, tmp_path, Clock(TOKYO), "chosen")
    sender.config = SendingConfig(default_timezone="America/Los_Angeles")
    await run_open_batches(db, sender, campaign_id)
    rows = await deliveries(db, campaign_id)
    los_angeles = datetime(2031, 6, 2, 16, 0, tzinfo=UTC)  # 09:00 at UTC-7
    assert rows["paris"].not_before == rows["bogus"].not_before == los_angeles
    assert (await campaign(db, campaign_id)).local_send_until == los_angeles


async def test_scheduling_in_local_time_is_refused_once_the_time_has_passed_everywhere(db: Database) -> None:
    campaign_id = await seed(db)
    # 09:00 on 1 June has passed even at UTC-12 by 1 June 22:00 UTC.
    with pytest.raises(DomainError) as refused:
        async with db.transaction() as s:
            await lifecycle.schedule_campaign(
                s,
                campaign_id,
                datetime(2031, 6, 1, 9, 0),
                now=datetime(2031, 6, 1, 22, 0, tzinfo=UTC),
                local=True,
            )
    assert refused.value.errors[0].code is ErrorCode.INVALID_INPUT
    assert refused.value.errors[0].field == "sendAt"
    # Still ahead somewhere (21:30 UTC is 09:30 at UTC-12): accepted, and due at once for the others.
    async with db.transaction() as s:
        row = await lifecycle.schedule_campaign(
            s,
            campaign_id,
            datetime(2031, 6, 1, 9, 0),
            now=datetime(2031, 6, 1, 20, 0, tzinfo=UTC),
            local=True,
        )
    assert row.status is CampaignStatus.SCHEDULED
    assert row.send_at == datetime(2031, 6, 1, 0, 0, tzinfo=UTC)


async def test_scheduling_again_without_local_time_sends_at_one_instant(db: Database, tmp_path: Path) -> None:
    campaign_id = await seed(db)
    await schedule(db, campaign_id, WALL)
    at = datetime(2031, 6, 2, 3, 0, tzinfo=UTC)
    async with db.transaction() as s:
        row = await lifecycle.schedule_campaign(s, campaign_id, at, now=SCHEDULED_ON)
        assert row.local_send_at is None and row.send_at == at
        await lifecycle.start_campaign(s, campaign_id, batch_size=100, now=at)
    sender = local_sender(db, tmp_path, Clock(at), "chosen")
    [outcome] = await run_open_batches(db, sender, campaign_id)
    assert outcome.done and len(sent_to(sender)) == 5
    assert all(d.not_before is None for d in (await deliveries(db, campaign_id)).values())
