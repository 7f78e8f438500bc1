"""The marketing frequency cap across campaigns: a campaign skips a person who already had the cap's number of
marketing messages within the window (reason ``frequency_cap``), transactional mail never counts, and
`next_allowed` says when a capped person may be mailed again. Both backends, and on PostgreSQL both ledgers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import (
    Campaign,
    CampaignList,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.sending import frequency_cap, lifecycle
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.frequency_cap import FrequencyCap
from emailkit.domain.sending.ledger import PortableLedger
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import CountingProvider, make_sender
from tests.support.database import recorded_statements

LEDGERS = pytest.mark.parametrize(
    "ledger", ["chosen", pytest.param("portable", marks=pytest.mark.postgresql_only)]
)
# The ledger records sends at the real time, so the history is seeded relative to it.
NOW = utcnow()
THREE_A_DAY = FrequencyCap(3, timedelta(days=1))
# What each person was mailed before the new campaign: (status, hours ago, marketing?)
HISTORY: dict[str, list[tuple[DeliveryStatus, float, bool]]] = {
    # Three campaign messages within the day: capped.
    "capped": [
        (DeliveryStatus.SENT, 20, True),
        (DeliveryStatus.SENT, 5, True),
        (DeliveryStatus.SENT, 1, True),
    ],
    # Two SENT and one that may have gone out: capped too.
    "doubt": [
        (DeliveryStatus.SENT, 2, True),
        (DeliveryStatus.SENT, 3, True),
        (DeliveryStatus.IN_DOUBT, 4, True),
    ],
    # Two within the day, one the day before, many transactional ones, and failed or skipped ones: not capped.
    "under": [
        (DeliveryStatus.SENT, 30, True),
        (DeliveryStatus.SENT, 10, True),
        (DeliveryStatus.SENT, 2, True),
        (DeliveryStatus.FAILED, 1, True),
        (DeliveryStatus.SKIPPED, 1, True),
        (DeliveryStatus.SENT, 1, False),
        (DeliveryStatus.SENT, 1, False),
        (DeliveryStatus.SENT, 1, False),
    ],
    "fresh": [],
}


async def seed(db: Database) -> int:
    """The people with their history (each marketing message from a campaign of its own) and a new campaign to
    all of them; returns the new campaign."""
    async with db.transaction() as s:
        lst = MailingList(name="News")
        s.add(lst)
        await s.flush()
        new = _campaign("New")
        s.add(new)
        await s.flush()
        s.add(CampaignList(campaign_id=new.id, list_id=lst.id))
        for name, history in HISTORY.items():
            person = Subscriber(email=f"{name}@example.com", name=name)
            s.add(person)
            await s.flush()
            s.add(Subscription(subscriber_id=person.id, list_id=lst.id))
            for status, hours_ago, marketing in history:
                old = _campaign("Old")
                old.status = CampaignStatus.FINISHED
                s.add(old)
                await s.flush()
                at = NOW - timedelta(hours=hours_ago)
                s.add(
                    Delivery(
                        campaign_id=old.id if marketing else None,
                        subscriber_id=person.id,
                        email=person.email,
                        status=status,
                        sent_at=at if status is DeliveryStatus.SENT else None,
                        created_at=at,
                        updated_at=at,
                    )
                )
        return new.id


def _campaign(name: str) -> Campaign:
    return Campaign(
        name=name, subject=name, from_email="news@example.com", body="<p>x</p>", format=ContentFormat.HTML
    )


async def send(db: Database, tmp_path: Path, campaign_id: int, ledger: str, **config: object) -> list[str]:
    """Start and send the campaign as of NOW; returns who was mailed."""
    async with db.transaction() as s:
        _, [batch_id] = await lifecycle.start_campaign(s, campaign_id, batch_size=100, now=NOW)
    provider = CountingProvider(OutboxProvider(tmp_path))
    sender = make_sender(db, provider, **config)
    sender.clock = lambda: NOW
    if ledger == "portable":
        sender.ledger = PortableLedger(db, provider_name="outbox", lease_seconds=sender.config.lease_seconds)
    outcome = await sender.run_batch(batch_id)
    assert outcome.done and outcome.campaign_finished
    return sorted(address.split("@")[0] for address in provider.sent_to)


async def ledger_rows(db: Database, campaign_id: int) -> dict[str, tuple[DeliveryStatus, str | None]]:
    async with db.session() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.campaign_id == campaign_id))).scalars()
        return {d.email.split("@")[0]: (d.status, d.skip_reason) for d in rows}


async def ids_by_name(db: Database) -> dict[str, int]:
    async with db.session() as s:
        return {p.name: p.id for p in (await s.execute(select(Subscriber))).scalars()}


@LEDGERS
async def test_a_campaign_skips_people_at_the_cap_and_counts_them_skipped(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    campaign_id = await seed(db)
    with recorded_statements(db) as statements:
        assert await send(db, tmp_path, campaign_id, ledger, marketing_cap=THREE_A_DAY) == ["fresh", "under"]
    assert reads_history(statements)
    assert await ledger_rows(db, campaign_id) == {
        "capped": (DeliveryStatus.SKIPPED, frequency_cap.SKIP_FREQUENCY_CAP),
        "doubt": (DeliveryStatus.SKIPPED, frequency_cap.SKIP_FREQUENCY_CAP),
        "under": (DeliveryStatus.SENT, None),
        "fresh": (DeliveryStatus.SENT, None),
    }
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
    assert row is not None
    assert (row.status, row.sent_count, row.skipped_count) == (CampaignStatus.FINISHED, 2, 2)


async def test_with_the_cap_off_everyone_is_sent_and_no_history_is_read(db: Database, tmp_path: Path) -> None:
    campaign_id = await seed(db)
    with recorded_statements(db) as statements:
        assert await send(db, tmp_path, campaign_id, "chosen") == ["capped", "doubt", "fresh", "under"]
    assert not reads_history(statements)
    assert SendingConfig().marketing_cap is None


def reads_history(statements: list[str]) -> bool:
    """Whether the cap's read of people's recent marketing deliveries ran."""
    return any("deliveries.sent_at >" in q for q in statements)


async def test_next_allowed_is_when_enough_sends_have_left_the_window(db: Database, tmp_path: Path) -> None:
    campaign_id = await seed(db)
    ids = await ids_by_name(db)
    async with db.session() as s:
        allowed = await frequency_cap.next_allowed(s, THREE_A_DAY, ids.values(), NOW)
    # Capped by three within the day: allowed again once the oldest of them (20 h ago) is a day old.
    assert allowed == {
        ids["capped"]: NOW + timedelta(hours=4),
        ids["doubt"]: NOW + timedelta(hours=20),
    }
    # Once the campaign has mailed "under" (its third within the day), they wait too: until the one of 10 h
    # ago has aged out. Transactional mail changed nothing for anyone.
    await send(db, tmp_path, campaign_id, "chosen", marketing_cap=THREE_A_DAY)
    now = utcnow()
    async with db.session() as s:
        allowed = await frequency_cap.next_allowed(s, THREE_A_DAY, ids.values(), now)
        looser = await frequency_cap.next_allowed(s, FrequencyCap(5, timedelta(days=1)), ids.values(), now)
        hourly = await frequency_cap.next_allowed(s, FrequencyCap(1, timedelta(hours=1)), ids.values(), now)
    assert allowed[ids["under"]] == NOW + timedelta(hours=14)
    assert ids["fresh"] not in allowed
    assert looser == {}
    # One an hour: everyone just mailed waits for that message to be an hour old ("capped" was mailed an hour
    # ago, by then aged out, and not by this campaign, which skipped them).
    assert set(hourly) == {ids["under"], ids["fresh"]}
    assert all(NOW + timedelta(hours=1) <= at <= now + timedelta(hours=1) for at in hourly.values())


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        ("3/day", FrequencyCap(3, timedelta(days=1))),
        (" 10 / Week ", FrequencyCap(10, timedelta(weeks=1))),
        ("1/hours", FrequencyCap(1, timedelta(hours=1))),
    ],
)
def test_caps_parse(text: str, cap: FrequencyCap) -> None:
    assert FrequencyCap.parse(text) == cap


@pytest.mark.parametrize("text", ["", "3", "3/month", "0/day", "-1/day", "three/day", "3/day;4/week"])
def test_bad_caps_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="N/hour, N/day or N/week"):
        FrequencyCap.parse(text)
