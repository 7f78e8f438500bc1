"""Choosing the winner of an A/B test and sending it to the rest of the audience.

The ticker chooses automatically once the wait is over (:func:`due`, :func:`send_rest`): the variant with the
best rate by the test's metric, a tie going to the earlier variant. ``pickWinner`` chooses by hand
(:func:`pick_winner`), before the wait is over or while the test is still being sent; the rest of the
audience then gets the winner as soon as the test's batches are all done. Either way the choice is made once,
under the campaign's row lock, with the winner's margin over the runner-up recorded as it stood then.

Sending the rest runs the campaign's batches again: their ledger rows of the test stay as they are (unique
per campaign and subscriber), and everybody else is materialised with the winner.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import (
    AbDecision,
    Campaign,
    CampaignAbTest,
    CampaignStatus,
)
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, NotFound
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.ab import state
from emailkit.domain.sending.ab.definition import test_of
from emailkit.domain.sending.ab.standings import Standings, VariantCounts, standings_of
from emailkit.domain.sending.jobs import Jobs

# The campaign has started and not ended: a winner can be picked (a PAUSED one sends it once resumed).
CAN_PICK = frozenset({CampaignStatus.RUNNING, CampaignStatus.PAUSED})


async def _locked(session: AsyncSession, campaign_id: int) -> Campaign | None:
    stmt = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


def _decide(
    test: CampaignAbTest, standings: Standings, winner: VariantCounts, by: AbDecision, now: datetime
) -> None:
    comparison = standings.comparison(winner)
    test.winner_variant_id = winner.variant.id
    test.decided_at = now
    test.decided_by = by
    test.lift = comparison.lift if comparison is not None else None
    test.z_score = comparison.z if comparison is not None else None
    test.p_value = comparison.p_value if comparison is not None else None


async def _send_rest(
    session: AsyncSession, campaign_id: int, test: CampaignAbTest, now: datetime
) -> Jobs | None:
    """Start sending the winner to the rest of the audience: the test's batches run again. None while a batch
    is still open (a retry of failed deliveries): once it is done the test is complete again, and due."""
    if await lifecycle.has_open_batches(session, campaign_id):
        return None
    test.remainder_started_at = now
    await session.flush()
    batch_ids = await lifecycle.send_to_the_rest(
        session, campaign_id, await state.note(session, test), now=now
    )
    return Jobs(batch_ids=batch_ids)


async def due(session: AsyncSession, now: datetime) -> list[tuple[int, int]]:
    """(workspace id, campaign id) of the RUNNING campaigns whose test has been sent and whose winner is due
    (the wait is over, or a winner was picked), in every active workspace (run it for all workspaces)."""
    stmt = (
        select(CampaignAbTest.workspace_id, CampaignAbTest.campaign_id)
        .join(Campaign, Campaign.id == CampaignAbTest.campaign_id)
        .join(Workspace, Workspace.id == CampaignAbTest.workspace_id)
        .where(
            CampaignAbTest.remainder_started_at.is_(None),
            CampaignAbTest.decide_at <= now,
            Campaign.status == CampaignStatus.RUNNING,
            Workspace.status == WorkspaceStatus.ACTIVE,
        )
        .order_by(CampaignAbTest.decide_at)
    )
    return [(int(w), int(c)) for w, c in (await session.execute(stmt)).all()]


async def send_rest(
    session: AsyncSession, campaign_id: int, *, now: datetime | None = None
) -> tuple[int | None, Jobs]:
    """For the ticker: choose the winner if nobody picked one, and start sending it to the rest; returns the
    winner's id and the batches to enqueue, or (None, no jobs) when the rest did not start: the campaign is not
    due (any more), or a retry is sending part of the test again (the choice made stays)."""
    now = now or utcnow()
    campaign = await _locked(session, campaign_id)
    test = await test_of(session, campaign_id)
    if (
        campaign is None
        or campaign.status is not CampaignStatus.RUNNING
        or test is None
        or test.remainder_started_at is not None
        or test.decide_at is None
        or test.decide_at > now
    ):
        return None, Jobs()
    if test.winner_variant_id is None:
        standings = await standings_of(session, campaign_id)
        leader = standings.leader() if standings is not None else None
        if standings is None or leader is None:
            return None, Jobs()
        _decide(test, standings, leader, AbDecision.AUTOMATIC, now)
    jobs = await _send_rest(session, campaign_id, test, now)
    return (None, Jobs()) if jobs is None else (test.winner_variant_id, jobs)


async def pick_winner(
    session: AsyncSession, campaign_id: int, variant_id: int, *, now: datetime | None = None
) -> tuple[Campaign, Jobs]:
    """Choose the winner by hand; returns the campaign and the batches to enqueue (those of the rest of the
    audience when the test has been sent already, else none: they follow once it has)."""
    now = now or utcnow()
    campaign = await _locked(session, campaign_id)
    if campaign is None:
        raise NotFound("Campaign", field="campaignId", code=ErrorCode.CAMPAIGN_NOT_FOUND)
    test = await test_of(session, campaign_id)
    if test is None:
        raise DomainError.single(ErrorCode.NO_AB_TEST, "The campaign has no A/B test", "campaignId")
    if test.winner_variant_id is not None or test.remainder_started_at is not None:
        raise DomainError.single(
            ErrorCode.WINNER_ALREADY_CHOSEN,
            "The winner of this A/B test has been chosen already",
            "variantId",
        )
    standings = await standings_of(session, campaign_id)
    chosen = standings.find(variant_id) if standings is not None else None
    if standings is None or chosen is None:
        raise NotFound("Variant", field="variantId", code=ErrorCode.VARIANT_NOT_FOUND)
    if campaign.status not in CAN_PICK:
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            f"A winner can be picked while the campaign is RUNNING or PAUSED, not {campaign.status.value}",
            "campaignId",
        )
    _decide(test, standings, chosen, AbDecision.MANUAL, now)
    jobs = Jobs()
    if test.test_sent_at is not None:
        # Due at once: sent now if the campaign runs, else by the ticker once it is resumed.
        test.decide_at = now
        if campaign.status is CampaignStatus.RUNNING:
            jobs = await _send_rest(session, campaign_id, test, now) or Jobs()
    await session.flush()
    if not jobs.batch_ids:
        await lifecycle.note_test_phase(session, campaign_id, await state.note(session, test))
    # The lifecycle changed the row by statement: read back what it says now.
    await session.refresh(campaign)
    return campaign, jobs
