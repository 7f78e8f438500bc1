"""Moving claimed runs through their flows: one worker run over one claim (see ``claims``).

The runs are taken (leased to this worker), then moved in rounds: each round groups the live runs by their
version and current step, and executes each group with set-based statements, so 500 people at the same step
cost a handful of statements, not 500. Instant steps (BRANCH, UPDATE, EXIT) move a run on within the claim;
a WAIT, a SEND waiting for a retry or for the frequency cap, and a WEBHOOK being retried park the run (a due
time, handed back); the end of the flow finishes it. Before each round, a run whose person was erased, or who
now matches the flow's exit condition, leaves.

Exactly once per (run, step, visit): every step writes its ledger row and the run's next place in one
transaction, guarded by the claim, and a step found already done (a worker died after its commit) only moves
the run on. A SEND's hand-over follows the campaign engine's rules (``send_step``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber, SubscriberStatus
from emailkit.db.tables.automation import FlowRun, FlowStepRunStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import subscribers as audience
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.filter import SubscriberFilter
from emailkit.domain.automation import runs as run_rows
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.counters import Tally
from emailkit.domain.automation.definition import Step, StepType
from emailkit.domain.automation.runs import Finish, Held, LeaseLost, Run
from emailkit.domain.automation.send_step import SKIP_BLOCKLISTED, SKIP_ERASED, StepSender
from emailkit.domain.automation.webhook_step import run_webhooks
from emailkit.domain.webhooks_out import emitters
from emailkit.domain.webhooks_out.delivery import WebhookPoster

log = logging.getLogger(__name__)

EXIT_CONDITION = "exit_condition"
EXIT_STEP = "exit_step"
# Steps over within the round that changes nobody's row in subscribers.
_INSTANT = frozenset({StepType.WAIT, StepType.BRANCH, StepType.EXIT})


@dataclass
class Outcome:
    runs: int = 0
    rounds: int = 0


class FlowRunner:
    """Runs claims. One per worker process: it holds the sender (provider connections) and the poster."""

    def __init__(
        self,
        db: Database,
        *,
        secret_key: str,
        config: FlowConfig | None = None,
        sender: StepSender | None = None,
        poster: Callable[[], WebhookPoster] | None = None,
        on_counters: Callable[[set[int]], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        # What "now" is for the flows' own timing (waits, retries, the cap); tests move it, leases keep the
        # wall clock.
        self.clock = clock
        if sender is not None:
            sender.clock = clock
        self.db = db
        self.secret_key = secret_key
        self.config = config or FlowConfig()
        self.sender = sender
        self.poster = poster
        self.on_counters = on_counters

    async def advance(self, workspace_id: int, claim: int) -> Outcome:
        """Move the claim's runs as far as they go now; whatever is left is handed back for a later tick."""
        async with self.db.transaction() as s:
            held = await run_rows.take(
                s,
                workspace_id,
                claim,
                utcnow(),
                self.config.lease_seconds,
                default_timezone=self.config.default_timezone,
            )
        outcome = Outcome(runs=len(held.runs))
        if not held.runs:
            async with self.db.transaction() as s:
                await run_rows.end_claim(s, held)
            return outcome
        keeper = asyncio.create_task(self._keep_lease(claim))
        tally = Tally()
        try:
            await self._rounds(held, tally, outcome)
        except LeaseLost:
            log.warning("flow runs of claim %s were taken over by another worker; stopping", claim)
            return outcome
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if self.on_counters is not None and tally.flow_ids:
                await self.on_counters(tally.flow_ids)
        async with self.db.transaction() as s:
            await run_rows.end_claim(s, held)
        return outcome

    async def _keep_lease(self, claim: int) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                async with self.db.transaction() as s:
                    renewed = await run_rows.extend(s, claim, utcnow(), self.config.lease_seconds)
            except Exception:
                log.warning("flow claim %s: lease not renewed", claim, exc_info=True)
                continue
            if not renewed:
                # Claimed again by another worker: its writes fail from now on (LeaseLost); nothing to keep.
                log.warning("flow claim %s: lease lost", claim)
                return

    async def _rounds(self, held: Held, tally: Tally, outcome: Outcome) -> None:
        people_read = True  # by `take`, just now
        for _round in range(self.config.max_rounds):
            live = held.live()
            if not live:
                return
            outcome.rounds += 1
            async with self.db.transaction() as s:
                if not people_read:
                    await run_rows.refresh_people(s, live)
                await self._leave_early(s, held, live, tally)
                await tally.write(s, held.workspace_id)
            groups: dict[tuple[int, str], list[Run]] = defaultdict(list)
            for r in held.live():
                groups[(r.version_id, r.step_key)].append(r)
            # A round of WAIT, BRANCH and EXIT steps changes no one and is over in moments: the people as read
            # before it stand for the next round (a wait ending and a SEND: one read of 1,000 people, not two).
            # An UPDATE changes them; a SEND or a WEBHOOK takes long enough for them to change meanwhile.
            people_read = True
            for (_, _key), group in sorted(groups.items()):
                step = group[0].step
                if step is None:  # a version always has its runs' steps; a mapping could only name real ones
                    continue
                people_read = people_read and step.type in _INSTANT
                with structlog.contextvars.bound_contextvars(flow=group[0].flow_id, step=step.key):
                    await self._execute(held, step, group, tally)

    async def _leave_early(self, s: AsyncSession, held: Held, live: list[Run], tally: Tally) -> None:
        """Runs whose person was erased, or matches the exit condition now, leave before their next step."""
        erased = [r for r in live if r.person is None]
        await run_rows.finish_runs(s, held.claim, erased, tally, self.clock(), exit_reason=SKIP_ERASED)
        by_condition: dict[int, list[Run]] = defaultdict(list)
        for r in live:
            if r.live and r.definition.exit_when is not None:
                by_condition[r.version_id].append(r)
        for group in by_condition.values():
            condition = group[0].definition.exit_when
            assert condition is not None
            matching = await _matching(s, condition, group, self.clock())
            leaving = [r for r in group if r.id in matching]
            await run_rows.finish_runs(
                s, held.claim, leaving, tally, self.clock(), exit_reason=EXIT_CONDITION
            )

    async def _execute(self, held: Held, step: Step, group: list[Run], tally: Tally) -> None:
        if step.type == StepType.SEND:
            if self.sender is None:
                raise RuntimeError("this process was not configured to send mail")
            await self.sender.run(held, step, group, self.config, tally)
        elif step.type == StepType.WEBHOOK:
            if self.poster is None:
                raise RuntimeError("this process was not configured to deliver webhooks")
            await run_webhooks(
                self.db, held, step, group, self.config, tally, self.poster(), self.secret_key, self.clock
            )
        else:
            async with self.db.transaction() as s:
                await self._instant(s, held, step, group, tally)
                await tally.write(s, held.workspace_id)

    async def _instant(self, s: AsyncSession, held: Held, step: Step, group: list[Run], tally: Tally) -> None:
        now = self.clock()
        if step.type == StepType.WAIT:
            await self._wait(s, held, step, group, tally)
        elif step.type == StepType.BRANCH:
            assert step.condition is not None
            matching = await _matching(s, step.condition, group, now)
            finishes = [
                Finish(
                    r,
                    FlowStepRunStatus.DONE,
                    "then" if r.id in matching else "otherwise",
                    step.then if r.id in matching else step.otherwise,
                )
                for r in group
            ]
            await run_rows.settle(s, held, finishes, tally, now)
        elif step.type == StepType.UPDATE:
            await self._update(s, held, step, group, tally)
        else:  # EXIT
            finishes = [Finish(r, FlowStepRunStatus.DONE, None, None, exit_reason=EXIT_STEP) for r in group]
            await run_rows.settle(s, held, finishes, tally, now)

    async def _wait(self, s: AsyncSession, held: Held, step: Step, group: list[Run], tally: Tally) -> None:
        """Runs arriving start their wait (a ledger row, a due time); runs whose wait ended move on."""
        now = self.clock()
        await run_rows.wait_at(s, held, step, [r for r in group if not r.waiting], tally, now, moving=False)
        ended = [r for r in group if r.waiting and r.live]
        finishes = [Finish(r, FlowStepRunStatus.DONE, None, step.next, started=True) for r in ended]
        await run_rows.settle(s, held, finishes, tally, now)

    async def _update(self, s: AsyncSession, held: Held, step: Step, group: list[Run], tally: Tally) -> None:
        """Set attributes and change lists, for people still reachable; the blocklisted leave the flow."""
        now = self.clock()
        blocked = [
            r for r in group if r.person is not None and r.person.status is SubscriberStatus.BLOCKLISTED
        ]
        going = [r for r in group if r not in blocked]
        ids = [r.person.id for r in going if r.person is not None]
        if step.set_attributes and ids:
            rows = (await s.execute(select(Subscriber).where(Subscriber.id.in_(ids)))).scalars().all()
            for row in rows:
                row.attributes = {**(row.attributes or {}), **step.set_attributes}
                row.updated_at = now
            await s.flush()
            for row in rows:
                await emitters.subscriber_updated(s, row)
        if step.add_list_ids and ids:
            await audience.subscribe_to_lists(s, ids, list(step.add_list_ids))
        if step.remove_list_ids and ids:
            await audience.unsubscribe_from_lists(s, ids, list(step.remove_list_ids), source="FLOW")
        finishes = [Finish(r, FlowStepRunStatus.DONE, None, step.next) for r in going]
        finishes += [
            Finish(r, FlowStepRunStatus.SKIPPED, SKIP_BLOCKLISTED, None, exit_reason=SKIP_BLOCKLISTED)
            for r in blocked
        ]
        await run_rows.settle(s, held, finishes, tally, now)


async def _matching(
    s: AsyncSession, condition: SubscriberFilter, group: Sequence[Run], now: datetime
) -> set[int]:
    """The runs of `group` whose person matches `condition` now (one query for the group)."""
    dialect = dialect_of(s)
    stmt: Any = (
        select(FlowRun.id)
        .join(Subscriber, Subscriber.id == FlowRun.subscriber_id)
        .where(
            FlowRun.id.in_([r.id for r in group]),
            compile_filter(condition, dialect, now=now, run_id=FlowRun.id),
        )
    )
    return {int(x) for x in (await s.execute(stmt)).scalars()}
