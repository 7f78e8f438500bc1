"""The flow job: moves one claim's runs (see emailkit.domain.automation.claims and .runner)."""

from __future__ import annotations

import logging

from emailkit.db.scope import workspace_scope
from emailkit.domain.automation.claims import ADVANCE_JOB
from emailkit.domain.runtime import Runtime, flow_runner
from emailkit.tasks.broker.registry import job
from emailkit.tasks.webhooks import poster_of

log = logging.getLogger(__name__)


# The lease, renewed while the job works, protects a long claim; the time limit only catches a hang. A job
# that dies lets its lease expire and the ticker claims the runs again, so Dramatiq's retries add nothing.
@job(ADVANCE_JOB, queue="flows", time_limit=60 * 60_000, max_retries=0)
async def advance_flow_runs(runtime: Runtime, *, workspace_id: int, claim: int) -> None:
    with workspace_scope(workspace_id):
        outcome = await flow_runner(runtime, lambda: poster_of(runtime)).advance(workspace_id, claim)
    if outcome.runs:
        log.info("flow claim %s: %d run(s) moved in %d round(s)", claim, outcome.runs, outcome.rounds)
