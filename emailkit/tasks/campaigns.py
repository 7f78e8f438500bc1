"""Campaign jobs: thin wrappers over the send pipeline (messages carry a batch id only)."""

from __future__ import annotations

import logging

import structlog

from emailkit.db.tables.sending import CampaignBatch, Delivery
from emailkit.domain.runtime import Runtime, campaign_sender
from emailkit.domain.sending import dispatch, transactional
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.tenancy import scope_of_row
from emailkit.tasks.broker.registry import job

log = logging.getLogger(__name__)


# Lease extension, not Dramatiq's time limit, is what protects a long batch; the limit only catches a hang.
@job(dispatch.SEND_BATCH_JOB, queue="sending", time_limit=60 * 60_000, max_retries=20)
async def send_campaign_batch(runtime: Runtime, *, batch_id: int) -> None:
    async with scope_of_row(runtime.db, CampaignBatch, batch_id) as found:
        if not found:
            return  # its campaign was deleted since
        outcome = await campaign_sender(runtime).run_batch(batch_id)
        if outcome.retry_after is not None:
            await dispatch.run_batch_again(runtime, batch_id, delay=outcome.retry_after)
    if outcome.claimed:
        with structlog.contextvars.bound_contextvars(campaign=outcome.campaign_id):
            log.info(
                "batch %s: sent %d, failed %d, skipped %d%s",
                batch_id,
                outcome.sent,
                outcome.failed,
                outcome.skipped,
                f", retry in {outcome.retry_after:.1f}s" if outcome.retry_after is not None else "",
            )


@job(dispatch.SEND_TRANSACTIONAL_JOB, queue="transactional", max_retries=8, min_backoff=5_000)
async def send_transactional_message(runtime: Runtime, *, delivery_id: int) -> None:
    setup = runtime.sending
    attempts = (setup.config if setup is not None else SendingConfig()).max_attempts
    async with scope_of_row(runtime.db, Delivery, delivery_id) as found:
        if found:
            await transactional.send_transactional(runtime, delivery_id, max_attempts=attempts)
