"""Periodic upkeep across areas, run by every worker process's ticker (and the embedded one).

Each second: the sending scheduler's steps (due campaigns started, A/B test winners sent to the rest, stale
batches and lost transactional messages requeued), the live stats of the campaigns whose winner was chosen,
and webhook dispatch (endpoints with due messages get a delivery job). Once an hour per process: the feedback
loop's maintenance (event partitions created ahead, old dedupe keys pruned), and old webhook messages pruned.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from emailkit.db.scope import all_workspaces
from emailkit.db.types import utcnow
from emailkit.domain.automation import claims, triggers
from emailkit.domain.feedback.live import publish_decided
from emailkit.domain.feedback.partitions import maintain_event_partitions
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import scheduler
from emailkit.domain.webhooks_out.dispatch import WebhookUpkeep

log = logging.getLogger(__name__)


class Upkeep:
    """Runs the per-tick steps, plus hourly maintenance (event partitions ahead, pruning) once per process."""

    MAINTENANCE_EVERY = timedelta(hours=1)

    def __init__(self) -> None:
        self._last_maintenance: datetime | None = None
        self._webhooks = WebhookUpkeep()

    async def tick(self, runtime: Runtime, now: datetime | None = None) -> None:
        now = now or utcnow()
        decided = await scheduler.tick(runtime, now)
        if decided:
            # Campaigns of any workspace: their A/B test winners show in campaignStats at once.
            with all_workspaces():
                await publish_decided(runtime.db, runtime.live, decided)
        await self._webhooks.tick(runtime, now)
        with all_workspaces():
            await triggers.evaluate_due(runtime.db, now, runtime.flows.default_timezone)
            await claims.dispatch_due_runs(runtime, now, hold=runtime.flows.hold_seconds)
        if self._last_maintenance is None or now - self._last_maintenance >= self.MAINTENANCE_EVERY:
            self._last_maintenance = now
            created = await maintain_event_partitions(runtime.db, now)
            if created:
                log.info("created event partitions: %s", ", ".join(created))
