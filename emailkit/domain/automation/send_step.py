"""A flow's SEND step for the runs that reached it: exactly once per (run, step, visit), like a campaign's send.

Each run's ledger row and its delivery (QUEUED) are written in one transaction, with the checks of the moment:
a person erased, blocklisted, suppressed or no longer subscribed gets nothing and leaves the flow; a person over
the frequency cap waits at the step. The messages are then rendered with the campaign engine's builder and
handed to the provider, which marks each delivery SENDING (committed, and only while this worker still holds
the claim) right before its final go; a sent one is committed SENT as its group of results comes back
(``handover``), and the sent runs are settled with their moves to the next step once the whole group is handed
over; a failure is recorded with its run's move (or retry) at once.

After a crash a delivery is QUEUED (it never went: it is sent now), SENDING (it may have gone: it becomes
IN_DOUBT and the run goes on without sending it again), SENT with its run still at the step (the run is settled
as sent and moves on), or recorded with its run moved on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, one_of
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, OptIn, SubscriberStatus, Subscription, SubscriptionStatus
from emailkit.db.tables.automation import FlowRun, FlowStepRun, FlowStepRunStatus, FlowVersion
from emailkit.db.tables.senders import Sender
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience.suppressions import suppressed_among
from emailkit.domain.automation import handover, ledger_pg
from emailkit.domain.automation import runs as run_rows
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.counters import Tally
from emailkit.domain.automation.definition import Step
from emailkit.domain.automation.runs import Finish, Held, LeaseLost, Run
from emailkit.domain.content.rendering import RenderError, render_failure_reason
from emailkit.domain.ports.provider import EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.senders import warmup
from emailkit.domain.senders.routing import SenderProviders, SenderRoute, SenderUnusable
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE, Pending
from emailkit.domain.sending.messages import Compiled, MessageBuilder, MessageSpec
from emailkit.domain.sending.pipeline import backoff
from emailkit.metrics import record as metrics

log = logging.getLogger(__name__)

SKIP_ERASED = "erased"
SKIP_BLOCKLISTED = "blocklisted"
SKIP_UNSUBSCRIBED = "unsubscribed"
SKIP_SUPPRESSED = "suppressed"


@dataclass
class _Queued:
    run: Run
    delivery_id: int
    attempts: int


class StepSender:
    """Sends flows' SEND steps; one per worker process (it holds the provider's connections)."""

    def __init__(
        self,
        db: Database,
        provider: EmailProvider,
        provider_name: str,
        messages: MessageBuilder,
        *,
        limiter: RateLimiter | None = None,
        sending: SendingConfig | None = None,
        senders: SenderProviders | None = None,
    ) -> None:
        self.db = db
        self.provider = provider
        self.provider_name = provider_name
        self.messages = messages
        self.limiter = limiter
        self.sending = sending or SendingConfig()
        # The step's sender (its senderId) or, without one, this process's default provider.
        self.senders = senders or SenderProviders(
            db, "", default=lambda: SenderRoute(None, provider_name, provider, limiter)
        )
        # Set by the runner that uses this sender (its clock).
        self.clock: Callable[[], datetime] = utcnow

    async def run(self, held: Held, step: Step, group: list[Run], config: FlowConfig, tally: Tally) -> None:
        queued = await self._prepare(held, step, group, config, tally)
        if not queued:
            return
        compiled = await self._compile(group[0], step)
        by_id = {q.delivery_id: q for q in queued}
        # Rendered and handed over a slice at a time, as a campaign's chunks are: only one slice's messages are
        # held at once (the whole group's kept a worker's memory well above a campaign's).
        done: set[str] = set()
        sent: list[_Queued] = []
        try:
            async with (
                self.senders.use(step.sender_id) as route,
                handover.lend(self.db, held, route.provider_name) as hand,
            ):

                async def flush(results: list[SendResult]) -> None:
                    # Sent ones are committed SENT at once (one statement), and settled with their runs once
                    # the group is handed over; the rare failures are recorded whole, here.
                    ok = [by_id[int(r.delivery_id)] for r in results if r.ok]
                    if ok:
                        pids = {int(r.delivery_id): r.provider_message_id for r in results if r.ok}
                        rows = [handover.Sent(q.delivery_id, pids[q.delivery_id], q.attempts + 1) for q in ok]
                        await hand.sent(rows, self.clock())
                        metrics.emails("flow", route.provider_name, "sent", len(rows))
                        sent.extend(ok)
                    failed = [r for r in results if not r.ok]
                    if failed:
                        await self._record_failures(held, step, by_id, tally, failed, route.provider_name)
                    done.update(r.delivery_id for r in results)

                coalescer: Coalescer[SendResult] = Coalescer(flush)
                commits: Coalescer[str] = Coalescer(hand.mark)
                step_size = max(
                    1,
                    min(route.provider.max_batch_size, self.sending.chunk_for(route.provider.max_batch_size)),
                )
                for start in range(0, len(queued), step_size):
                    part, unrendered = await self._build(compiled, queued[start : start + step_size])
                    results = unrendered
                    if part:
                        if route.limiter is not None:
                            await route.limiter.acquire(len(part))
                        results += await route.send_batch(
                            part, on_commit=commits.submit, on_result=coalescer.submit
                        )
                    rest = [r for r in results if r.delivery_id not in done]
                    if rest:
                        await flush(rest)
            # The sent runs move on together, once: a SENT delivery whose run a crash left at the step is
            # settled as sent by whoever takes the run next.
            await self._settle_sent(held, step, sent, tally)
        except SenderUnusable as exc:
            # Nothing more was handed over: the rest waits and tries again (with backoff) once it is fixed.
            await self._settle_sent(held, step, sent, tally)
            unsent = [
                SendResult.failed(str(q.delivery_id), str(exc), transient=True)
                for q in queued
                if str(q.delivery_id) not in done
            ]
            if unsent:
                await self._record_failures(held, step, by_id, tally, unsent, route.provider_name)

    async def _build(
        self, compiled: Compiled, queued: Sequence[_Queued]
    ) -> tuple[list[OutgoingMessage], list[SendResult]]:
        """The messages of QUEUED, and the failures of those that could not be rendered."""
        messages: list[OutgoingMessage] = []
        unrendered: list[SendResult] = []
        for i, q in enumerate(queued, 1):
            person = q.run.person
            assert person is not None
            pending = Pending(
                q.delivery_id, person.id, person.email, person.name, person.attributes, q.attempts
            )
            pending.context = q.run.context
            try:
                messages.append(self.messages.build(compiled, pending))
            except RenderError as exc:
                unrendered.append(
                    SendResult.failed(str(q.delivery_id), render_failure_reason(exc), transient=False)
                )
            if i % 4 == 0:
                await asyncio.sleep(0)
        return messages, unrendered

    # -- before the hand-over ------------------------------------------------------------------------------

    async def _prepare(
        self, held: Held, step: Step, group: list[Run], config: FlowConfig, tally: Tally
    ) -> list[_Queued]:
        """Ledger rows and deliveries for the group, in one transaction; returns the deliveries to send."""
        now = self.clock()
        async with self.db.transaction() as s:
            # Rows exist only for a step redone (a worker died after its commit) or waiting for the cap.
            ledger = await run_rows.existing_steps(s, group)
            deliveries = await _deliveries(s, [row.delivery_id for row in ledger.values() if row.delivery_id])
            finishes: list[Finish] = []
            fresh: list[Run] = []
            queued: list[_Queued] = []
            for r in group:
                row = ledger.get(r.id)
                d = deliveries.get(row.delivery_id) if row is not None and row.delivery_id else None
                if d is None:
                    fresh.append(r)
                elif d.status is DeliveryStatus.SENDING:
                    # The worker that marked it died handing it over: it may have gone; never again.
                    await _in_doubt(s, d.id)
                    finishes.append(
                        Finish(r, FlowStepRunStatus.IN_DOUBT, IN_DOUBT_NOTE, step.next, started=True)
                    )
                elif d.status is DeliveryStatus.QUEUED:
                    queued.append(_Queued(r, d.id, d.attempts))
                else:
                    status = (
                        FlowStepRunStatus.SENT
                        if d.status is DeliveryStatus.SENT
                        else FlowStepRunStatus.FAILED
                    )
                    finishes.append(Finish(r, status, d.last_error, step.next, started=True))
            skips, waiting, sendable = await _checks(s, step, fresh, config, now)
            finishes += [
                Finish(r, FlowStepRunStatus.SKIPPED, reason, None, exit_reason=reason, started=r.id in ledger)
                for r, reason in skips
            ]
            if waiting:
                await self._wait_for_cap(s, held, waiting, ledger, tally, now)
            if sendable and step.sender_id is not None:
                sendable, over = await _within_warmup(s, step.sender_id, sendable, now)
                if over:
                    await self._wait_for_cap(s, held, over, ledger, tally, now, why="sender warm-up")
            queued += await _queue(s, held, step, sendable, ledger, tally, now)
            await run_rows.settle(s, held, finishes, tally, now)
            await tally.write(s, held.workspace_id)
        # Before any sender is chosen for them: counted under the sender "none".
        metrics.emails("flow", "none", "skipped", len(skips))
        metrics.emails(
            "flow", "none", "in_doubt", sum(f.status is FlowStepRunStatus.IN_DOUBT for f in finishes)
        )
        return queued

    async def _wait_for_cap(
        self,
        s: AsyncSession,
        held: Held,
        waiting: list[tuple[Run, datetime]],
        ledger: dict[int, run_rows.StepRow],
        tally: Tally,
        now: datetime,
        why: str = "frequency cap",
    ) -> None:
        """The runs over the frequency cap (or their sender's warm-up allowance) stay at the step (its ledger
        row started) until they may send."""
        runs = [r for r, _ in waiting]
        until = dict((r.id, at) for r, at in waiting)
        await run_rows.park(s, held.claim, runs, until, waiting=False)
        for r in runs:
            note = f"{why}: waiting until {until[r.id].isoformat()}"
            row = ledger.get(r.id)
            if row is None:
                await run_rows.insert_steps(s, held, [r], now, detail=note)
                tally.step(r.flow_id, r.step_key, "entered")
            else:
                await s.execute(update(FlowStepRun).where(FlowStepRun.id == row.id).values(detail=note))

    async def _compile(self, run: Run, step: Step) -> Compiled:
        async with self.db.session() as s:
            published = await s.scalar(
                select(FlowVersion.published_at).where(FlowVersion.id == run.version_id)
            )
            spec = MessageSpec(
                workspace_id=(await s.scalar(select(FlowRun.workspace_id).where(FlowRun.id == run.id))) or 0,
                updated_at=published or utcnow(),
                subject=step.subject or "",
                from_email=step.from_email or "",
                from_name=step.from_name or "",
                reply_to=step.reply_to,
                template_id=step.template_id,
                body=None,
                format=None,
                plain_text=None,
                track_opens=step.track_opens,
                track_clicks=step.track_clicks,
                web_view_link=False,
                list_id=(run.flow_name, f"flow-{run.flow_id}"),
                variables={
                    "id": None,
                    "name": run.flow_name,
                    "from_email": step.from_email,
                    "from_name": step.from_name or "",
                    "reply_to": step.reply_to,
                    "flow": {"id": run.flow_id, "name": run.flow_name, "step": step.key},
                },
            )
            return await self.messages.compile_spec(s, spec)

    # -- the hand-over and its results ---------------------------------------------------------------------

    async def _settle_sent(self, held: Held, step: Step, sent: Sequence[_Queued], tally: Tally) -> None:
        """The sent runs' ledger rows, their moves to the next step, and the counters, in one transaction."""
        if not sent:
            return
        now = self.clock()
        async with self.db.transaction() as s:
            finishes = [Finish(q.run, FlowStepRunStatus.SENT, None, step.next, started=True) for q in sent]
            await run_rows.settle(s, held, finishes, tally, now)
            await tally.write(s, held.workspace_id)

    async def _record_failures(
        self,
        held: Held,
        step: Step,
        by_id: dict[int, _Queued],
        tally: Tally,
        results: list[SendResult],
        sender: str,
    ) -> None:
        now = self.clock()
        finishes: list[Finish] = []
        retry: dict[int, datetime] = {}
        retry_runs: list[Run] = []
        async with self.db.transaction() as s:
            for r in results:
                q = by_id[int(r.delivery_id)]
                attempts = q.attempts + 1
                error = (r.error or "unknown error")[:2000]
                if r.transient and attempts < self.sending.max_attempts:
                    await _set_delivery(s, q.delivery_id, DeliveryStatus.QUEUED, attempts, error=error)
                    wait = r.retry_after or backoff(
                        attempts, self.sending.retry_base_seconds, self.sending.retry_max_seconds
                    )
                    retry[q.run.id] = now + timedelta(seconds=wait)
                    retry_runs.append(q.run)
                    continue
                if r.transient:
                    error = f"gave up after {attempts} attempts: {error}"
                await _set_delivery(s, q.delivery_id, DeliveryStatus.FAILED, attempts, error=error)
                finishes.append(Finish(q.run, FlowStepRunStatus.FAILED, error, step.next, started=True))
            await run_rows.settle(s, held, finishes, tally, now)
            if retry_runs:
                await run_rows.park(s, held.claim, retry_runs, retry, waiting=False)
            await tally.write(s, held.workspace_id)
        metrics.emails("flow", sender, "failed", len(finishes))
        metrics.emails("flow", sender, "deferred", len(retry_runs))


async def _deliveries(session: AsyncSession, ids: Sequence[int | None]) -> dict[int, Delivery]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = (
        await session.execute(select(Delivery).where(one_of(session, Delivery.id, wanted, BigInteger())))
    ).scalars()
    return {d.id: d for d in rows}


async def _in_doubt(session: AsyncSession, delivery_id: int) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.IN_DOUBT, last_error=IN_DOUBT_NOTE, updated_at=utcnow())
    )


# A failure is of a delivery marked for its hand-over, or of one never handed over (it could not be rendered).
_OURS = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


async def _set_delivery(
    session: AsyncSession,
    delivery_id: int,
    status: DeliveryStatus,
    attempts: int,
    *,
    sent_at: datetime | None = None,
    pid: str | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "updated_at": utcnow(),
        "last_error": error,
    }
    if sent_at is not None:
        values.update(sent_at=sent_at, provider_message_id=pid)
    await session.execute(
        update(Delivery).where(Delivery.id == delivery_id, Delivery.status.in_(_OURS)).values(**values)
    )


async def _checks(
    session: AsyncSession, step: Step, runs: list[Run], config: FlowConfig, now: datetime
) -> tuple[list[tuple[Run, str]], list[tuple[Run, datetime]], list[tuple[Run, list[int]]]]:
    """Who is skipped (and why), who waits for the frequency cap (until when), and who is sent to (with the
    lists that make them sendable: an unsubscribe from the message leaves those)."""
    skips: list[tuple[Run, str]] = []
    candidates: list[Run] = []
    for r in runs:
        if r.person is None:
            skips.append((r, SKIP_ERASED))
        elif r.person.status is SubscriberStatus.BLOCKLISTED:
            skips.append((r, SKIP_BLOCKLISTED))
        else:
            candidates.append(r)
    if not candidates:
        return skips, [], []
    lists = await _sendable_lists(session, [r.person.id for r in candidates if r.person])
    suppressed = await suppressed_among(session, [r.person.email for r in candidates if r.person])
    sendable: list[tuple[Run, list[int]]] = []
    for r in candidates:
        assert r.person is not None
        own = lists.get(r.person.id, [])
        wanted = r.definition.trigger.list_id
        via = [lid for lid in own if lid == wanted] if wanted is not None else own
        if not via:
            skips.append((r, SKIP_UNSUBSCRIBED))
        elif r.person.email in suppressed:
            skips.append((r, SKIP_SUPPRESSED))
        else:
            sendable.append((r, via))
    waiting: list[tuple[Run, datetime]] = []
    if config.cap is not None and sendable:
        capped = await config.cap(session, [r.person.id for r, _ in sendable if r.person], now)
        waiting = [(r, capped[r.person.id]) for r, _ in sendable if r.person and r.person.id in capped]
        sendable = [(r, via) for r, via in sendable if r.person and r.person.id not in capped]
    return skips, waiting, sendable


async def _within_warmup(
    session: AsyncSession, sender_id: int, sendable: list[tuple[Run, list[int]]], now: datetime
) -> tuple[list[tuple[Run, list[int]]], list[tuple[Run, datetime]]]:
    """Those of `sendable` today's warm-up allowance of the sender takes (counted), and those that wait for
    tomorrow's. One read of the sender per group; its row is locked only when it has a plan."""
    row = await session.get(Sender, sender_id)
    plan = warmup.plan_of(row) if row is not None else None
    if plan is None:
        return sendable, []
    today = await warmup.locked_today(session, sender_id, plan, now)
    taken = sendable[: today.remaining]
    if taken:
        await warmup.count(session, sender_id, len(taken), now)
    return taken, [(r, today.resets_at) for r, _ in sendable[len(taken) :]]


async def _sendable_lists(session: AsyncSession, subscriber_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(Subscription.subscriber_id, Subscription.list_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            one_of(session, Subscription.subscriber_id, subscriber_ids, BigInteger()),
            or_(
                Subscription.status == SubscriptionStatus.CONFIRMED,
                and_(
                    Subscription.status == SubscriptionStatus.UNCONFIRMED, MailingList.optin == OptIn.SINGLE
                ),
            ),
        )
        .order_by(Subscription.subscriber_id, Subscription.list_id)
    )
    out: dict[int, list[int]] = {}
    for sid, lid in (await session.execute(stmt)).all():
        out.setdefault(int(sid), []).append(int(lid))
    return out


async def _queue(
    session: AsyncSession,
    held: Held,
    step: Step,
    sendable: list[tuple[Run, list[int]]],
    ledger: dict[int, run_rows.StepRow],
    tally: Tally,
    now: datetime,
) -> list[_Queued]:
    """A QUEUED delivery per sendable run, named on its ledger row (written here when the step is new)."""
    if not sendable:
        return []
    if dialect_of(session) == "postgresql":
        inserted: Sequence[Any] = await ledger_pg.insert_deliveries(
            session,
            held.workspace_id,
            step.template_id,
            step.sender_id,
            DeliveryStatus.QUEUED.value,
            [(r.id, r.person.id, r.person.email, via) for r, via in sendable if r.person is not None],
            now,
        )
    else:
        rows = [
            {
                "workspace_id": held.workspace_id,
                "campaign_id": None,
                "subscriber_id": r.person.id if r.person else None,
                "email": r.person.email if r.person else "",
                "template_id": step.template_id,
                "status": DeliveryStatus.QUEUED,
                "via_list_ids": via,
                "attempts": 0,
                "flow_run_id": r.id,
                "sender_id": step.sender_id,
                "created_at": now,
                "updated_at": now,
            }
            for r, via in sendable
        ]
        deliveries = Delivery.__table__
        # SQLite: an executemany (compiled once).
        inserted = (
            await session.execute(
                insert(deliveries).returning(deliveries.c.id, deliveries.c.flow_run_id),  # type: ignore[arg-type]
                rows,
            )
        ).all()
    by_run = {int(run_id or 0): int(did) for did, run_id in inserted}
    # A new step's ledger row is written with its delivery (no second write to name it); the claim keeps any
    # other worker off these runs, so a row found written meanwhile means the claim was lost.
    new = [r for r, _ in sendable if r.id not in ledger]
    written = await run_rows.insert_steps(session, held, new, now, deliveries=by_run)
    if len(written) != len(new):
        raise LeaseLost(f"flow runs of claim {held.claim} were moved by another worker")
    for r in new:
        tally.step(r.flow_id, r.step_key, "entered")
    again = [r for r, _ in sendable if r.id in ledger]
    if again:
        table = FlowStepRun.__table__
        await session.execute(
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("b_id"), table.c.workspace_id == held.workspace_id)
            .values(delivery_id=bindparam("b_delivery")),
            [{"b_id": ledger[r.id].id, "b_delivery": by_run[r.id]} for r in again],
        )
    return [_Queued(r, by_run[r.id], 0) for r, _ in sendable]
