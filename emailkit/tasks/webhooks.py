"""The webhook delivery job: delivers one endpoint's due messages (see emailkit.domain.webhooks_out.delivery).

The ticker enqueues it for every endpoint with due messages (emailkit.domain.webhooks_out.dispatch); a run whose
budget ended with work left enqueues its endpoint again at once. The HTTP client is built once per worker
process, on the event loop that runs the jobs, and its keep-alive connections serve every later run.
"""

from __future__ import annotations

import logging

from emailkit.db.tables.webhooks_out import WebhookEndpoint
from emailkit.domain.runtime import Runtime
from emailkit.domain.tenancy import scope_of_row
from emailkit.domain.webhooks_out import dispatch
from emailkit.domain.webhooks_out.delivery import Deliverer, WebhookPoster
from emailkit.providers.webhook_client import GuardedHttpClient
from emailkit.tasks.broker.registry import job

log = logging.getLogger(__name__)


def poster_of(runtime: Runtime) -> WebhookPoster:
    setup = runtime.webhooks
    return setup.poster(lambda: GuardedHttpClient(allow_private=setup.config.allow_private))


# A run hands its endpoint back after its budget (a minute); the limit only catches a hang. Dramatiq's own
# retries matter only for a run that died before recording anything: the lease then expires and the ticker
# enqueues the endpoint again anyway.
@job(dispatch.DELIVER_JOB, queue="webhooks", time_limit=10 * 60_000, max_retries=3)
async def deliver_webhooks(runtime: Runtime, *, endpoint_id: int) -> None:
    async with scope_of_row(runtime.db, WebhookEndpoint, endpoint_id) as found:
        if not found:
            return  # deleted since
        deliverer = Deliverer(runtime.db, poster_of(runtime), runtime.secret_key, runtime.webhooks.config)
        outcome = await deliverer.run(endpoint_id)
    if outcome.claimed and (outcome.succeeded or outcome.failed):
        log.info(
            "webhook endpoint %s: %d delivered, %d failed%s",
            endpoint_id,
            outcome.succeeded,
            outcome.failed,
            ", disabled" if outcome.disabled else "",
        )
    if outcome.more:
        await dispatch.enqueue(runtime, endpoint_id)
