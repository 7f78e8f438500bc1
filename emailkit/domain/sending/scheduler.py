"""Periodic upkeep that keeps sends moving with no external cron.

Every worker process (and the embedded one) runs :func:`tick` every second or so. Each step is an atomic,
idempotent database update, so any number of processes may tick at once: starting a due campaign locks its row
(so does sending an A/B test's winner to the rest of its audience), and re-enqueueing a batch first moves its
``enqueued_at`` forward (a transactional delivery its ``updated_at``) so only one ticker wins. Each step
enqueues through ``dispatch.commit_then_enqueue``: only after its update has committed, so a ticker whose claim
was rolled back (or run again after a conflict) enqueues nothing for it.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.sending import (
    TRANSACTIONAL_QUEUED,
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
)
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import dispatch, lifecycle
from emailkit.domain.sending.ab import winner
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.sending_domains.policy import require_verified_campaign
from emailkit.domain.transactions import ConcurrentChange

log = logging.getLogger(__name__)

TRANSACTIONAL_MAX_AGE = timedelta(days=1)


async def start_due_campaigns(runtime: Runtime, now: datetime) -> list[int]:
    config = runtime.sending.config if runtime.sending else SendingConfig()
    with all_workspaces():
        async with runtime.db.session() as s:
            due = await lifecycle.due_scheduled(s, now)
    started = []
    for workspace_id, campaign_id in due:
        with workspace_scope(workspace_id):
            if await _start_due(runtime, campaign_id, config, now):
                started.append(campaign_id)
    return started


async def _start_due(runtime: Runtime, campaign_id: int, config: SendingConfig, now: datetime) -> bool:
    async def start(session: AsyncSession) -> tuple[Campaign, Jobs]:
        # Held to EMAILKIT_REQUIRE_VERIFIED_DOMAINS once more: its domain may have gone since it was scheduled.
        await require_verified_campaign(session, campaign_id, runtime.domains)
        return await lifecycle.start_campaign_with_jobs(
            session,
            campaign_id=campaign_id,
            batch_size=config.batch_size,
            now=now,
            default_timezone=config.default_timezone,
        )

    try:
        dispatched = await dispatch.commit_then_enqueue(runtime, start)
    except ConcurrentChange:
        # Conflicts that outlasted the reruns say nothing against the campaign: this tick fails, the next
        # one tries again.
        raise
    except DomainError as exc:
        # Another ticker started it first, or it can no longer start: say why on the campaign.
        log.info("scheduled campaign %s not started: %s", campaign_id, exc)
        async with runtime.db.transaction() as s:
            await lifecycle.fail_to_start(s, campaign_id, exc)
        return False
    dispatched.or_raise()
    return True


async def send_due_winners(runtime: Runtime, now: datetime) -> list[int]:
    """A/B tests whose wait is over (or whose winner was picked) once their test was sent: the winner is chosen
    unless picked, and sent to the rest of the audience, each campaign inside its own workspace's scope.
    Returns the campaigns whose rest started now."""
    with all_workspaces():
        async with runtime.db.session() as s:
            due = await winner.due(s, now)
    started = []
    for workspace_id, campaign_id in due:
        with workspace_scope(workspace_id):
            dispatched = await dispatch.commit_then_enqueue(
                runtime, functools.partial(winner.send_rest, campaign_id=campaign_id, now=now)
            )
        if dispatched.value is None:
            continue  # another ticker was first, or the campaign stopped meanwhile
        started.append(campaign_id)
        log.info("campaign %s: A/B test decided, sending the winner to the rest", campaign_id)
        if dispatched.queue_error is not None:
            # Committed: the batches are PENDING and enqueued again as stale ones once the queue is back.
            log.warning(
                "campaign %s: the rest's batches are not queued: %s", campaign_id, dispatched.queue_error
            )
    return started


async def requeue_stale_batches(runtime: Runtime, now: datetime, requeue_after: float) -> list[int]:
    """Batches of running campaigns that no worker holds and no queue message seems to carry."""
    cutoff = now - timedelta(seconds=requeue_after)
    # A PENDING batch of a campaign that a worker is busy with is most likely just waiting its turn in the
    # queue; only when nobody holds a live lease on the campaign are its queue messages presumed lost.
    busy = aliased(CampaignBatch)
    campaign_busy = exists().where(
        busy.campaign_id == CampaignBatch.campaign_id,
        busy.status == BatchStatus.RUNNING,
        busy.lease_until >= now,
    )
    stale = and_(
        or_(CampaignBatch.enqueued_at.is_(None), CampaignBatch.enqueued_at < cutoff),
        or_(
            and_(CampaignBatch.status == BatchStatus.PENDING, ~campaign_busy),
            and_(CampaignBatch.status == BatchStatus.RUNNING, CampaignBatch.lease_until < now),
        ),
    )
    running = select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)

    async def claim(s: AsyncSession) -> tuple[list[int], Jobs]:
        ids = list(
            (
                await s.execute(
                    select(CampaignBatch.id).where(stale, CampaignBatch.campaign_id.in_(running)).limit(500)
                )
            ).scalars()
        )
        if not ids:
            return [], Jobs()
        # Claim the right to re-enqueue: only rows still stale are moved forward, so two tickers never both win.
        result = await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id.in_(ids), stale)
            .values(enqueued_at=now)
            .returning(CampaignBatch.id)
        )
        won = [int(x) for x in result.scalars()]
        return won, Jobs(batch_ids=won)

    dispatched = await dispatch.commit_then_enqueue(runtime, claim)
    if dispatched.value:
        log.info("re-enqueueing %d stale batch(es)", len(dispatched.value))
    return dispatched.or_raise()


async def requeue_lost_transactional(runtime: Runtime, now: datetime, requeue_after: float) -> list[int]:
    """Transactional deliveries still QUEUED long after their last change: their queue message was most likely
    lost (a Redis restart), so they are enqueued again. A job that was only late is harmless: whichever run
    marks the row SENDING first sends it, and the other finds it handled."""
    cutoff = now - timedelta(seconds=requeue_after)
    stale = and_(
        # No campaign, no flow run (a flow's SEND has no campaign either, but its runner owns it, see
        # domain.automation), still QUEUED: the partial index's own predicate, constants inline.
        TRANSACTIONAL_QUEUED,
        Delivery.updated_at < cutoff,
        # A receipt or confirmation older than this is no longer expected; sending it would only confuse.
        Delivery.created_at >= now - TRANSACTIONAL_MAX_AGE,
    )

    async def claim(s: AsyncSession) -> tuple[list[int], Jobs]:
        ids = list(
            (await s.execute(select(Delivery.id).where(stale).order_by(Delivery.id).limit(500))).scalars()
        )
        if not ids:
            return [], Jobs()
        # Claim the right to re-enqueue, as for batches: only rows still stale are moved forward.
        result = await s.execute(
            update(Delivery).where(Delivery.id.in_(ids), stale).values(updated_at=now).returning(Delivery.id)
        )
        won = sorted(int(x) for x in result.scalars())
        return won, Jobs(transactional_ids=won)

    dispatched = await dispatch.commit_then_enqueue(runtime, claim)
    if dispatched.value:
        log.info("re-enqueueing %d transactional delivery(ies) left queued", len(dispatched.value))
    return dispatched.or_raise()


async def tick(runtime: Runtime, now: datetime | None = None) -> list[int]:
    """The steps for all workspaces at once (a campaign starts inside its own workspace's scope); returns the
    campaigns whose A/B test was decided by this tick, whose live stats then change."""
    now = now or utcnow()
    with all_workspaces():
        await start_due_campaigns(runtime, now)
        decided = await send_due_winners(runtime, now)
        requeue_after = (runtime.sending.config if runtime.sending else SendingConfig()).requeue_after_seconds
        await requeue_stale_batches(runtime, now, requeue_after)
        await requeue_lost_transactional(runtime, now, requeue_after)
    return decided
