"""The phases of a campaign's A/B test as the lifecycle sees them, and what the campaign's statusReason says
in each: the test is being sent; it waits for the winner (until when); the winner goes to the rest.

Only reads and the test's own row are written here; the campaign's status and reason are the lifecycle's.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import AbDecision, AbMetric, CampaignAbTest, CampaignVariant
from emailkit.domain.sending.ab.content import label
from emailkit.domain.sending.ab.definition import test_of

# What every statusReason about an A/B test starts with.
NOTE_PREFIX = "A/B test: "
METRIC_WORDS = {AbMetric.OPENS: "unique opens", AbMetric.CLICKS: "unique clicks"}


class AbPhase(enum.StrEnum):
    # The campaign has not started.
    PLANNED = "PLANNED"
    # The test share is being sent.
    TESTING = "TESTING"
    # The test share has been sent; the rest waits for the winner.
    WAITING = "WAITING"
    # The winner goes (or went) to the rest of the audience.
    WINNER_SENT = "WINNER_SENT"


def phase(test: CampaignAbTest, *, started: bool) -> AbPhase:
    if test.remainder_started_at is not None:
        return AbPhase.WINNER_SENT
    if test.test_sent_at is not None:
        return AbPhase.WAITING
    return AbPhase.TESTING if started else AbPhase.PLANNED


def duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds} s"


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


async def _label_of(session: AsyncSession, variant_id: int) -> str:
    stmt = select(CampaignVariant.position).where(CampaignVariant.id == variant_id)
    position = (await session.execute(stmt)).scalar_one_or_none()
    return label(position) if position is not None else "?"


def in_test_phase(test: CampaignAbTest | None) -> bool:
    """The rest of the audience has not been sent the winner yet: batches materialise the test share only."""
    return test is not None and test.remainder_started_at is None


async def note(session: AsyncSession, test: CampaignAbTest) -> str:
    """The statusReason of a RUNNING campaign with this test, for the phase it is in."""
    metric = METRIC_WORDS[test.metric]
    if test.remainder_started_at is not None and test.winner_variant_id is not None:
        how = "picked" if test.decided_by is AbDecision.MANUAL else f"chosen by {metric}"
        winner = await _label_of(session, test.winner_variant_id)
        return f"{NOTE_PREFIX}variant {winner} won ({how}); sending it to the rest of the audience"
    if test.winner_variant_id is not None:
        winner = await _label_of(session, test.winner_variant_id)
        when = "next" if test.test_sent_at is not None else "once the test is sent"
        return f"{NOTE_PREFIX}variant {winner} was picked; the rest of the audience gets it {when}"
    if test.decide_at is not None:
        return f"{NOTE_PREFIX}waiting for the winner (by {metric}) until {_at(test.decide_at)}"
    return (
        f"{NOTE_PREFIX}sending the test to {test.test_share:.0%} of the audience; the rest waits for the winner "
        f"(by {metric}), chosen {duration(test.wait_seconds)} after the test is sent"
    )


async def running_note(session: AsyncSession, campaign_id: int) -> str | None:
    """What a RUNNING campaign's statusReason says when nothing else holds it up: its test's phase, if any."""
    test = await test_of(session, campaign_id)
    return await note(session, test) if test is not None else None


async def test_sent(session: AsyncSession, campaign_id: int, now: datetime) -> str | None:
    """Every batch of the campaign is done: if that was its test (the winner has not gone out yet), start the
    wait and return the statusReason saying so; None when the campaign is simply complete.

    The automatic choice is due `wait_seconds` after the test was first complete (a retry of failed
    deliveries that sends some of it again does not move it), or now when a winner was picked meanwhile."""
    test = await test_of(session, campaign_id)
    if test is None or not in_test_phase(test):
        return None
    if test.test_sent_at is None:
        test.test_sent_at = now
    due = (
        now
        if test.winner_variant_id is not None
        else test.test_sent_at + timedelta(seconds=test.wait_seconds)
    )
    test.decide_at = due if test.decide_at is None else min(test.decide_at, due)
    await session.flush()
    return await note(session, test)
