"""A flow's SEND step for the runs that reached it: exactly once per (run, step, visit), like a campaign's send.

Each run's ledger row and its delivery (QUEUED) are written in one transaction, with the checks of the moment:
a person erased, blocklisted, suppressed or no longer subscribed gets nothing and leaves the flow; a person over
the frequency cap waits at the step. The messages are then rendered with the campaign engine's builder and
handed to the provider, which marks each delivery SENDING (committed, and only while this worker still holds
the claim) right before its final go; its result is recorded together with the run's move to the next step.

After a crash a delivery is QUEUED (it never went: it is sent now), SENDING (it may have gone: it becomes
IN_DOUBT and the run goes on without sending it again) or recorded with its run moved on.
"""

from __future__ import annotations

import asyncio
import functools
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
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience.suppressions import suppressed_among
from emailkit.domain.automation import runs as run_rows
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.counters import Tally
from emailkit.domain.automation.definition import Step
from emailkit.domain.automation.runs import Finish, Held, LeaseLost, Run
from emailkit.domain.content.rendering import RenderError, render_failure_reason
from emailkit.domain.ports.provider import EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE, Pending, record_sent_statement
from emailkit.domain.sending.messages import Compiled, MessageBuilder, MessageSpec
from emailkit.domain.sending.pipeline import backoff

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
    ) -> None:
        self.db = db
        self.provider = provider
        self.provider_name = provider_name
        self.messages = messages
        self.limiter = limiter
        self.sending = sending or SendingConfig()
        # Set by the runner that uses this sender (its clock).
        self.clock: Callable[[], datetime] = utcnow

    async def run(self, held: Held, step: Step, group: list[Run], config: FlowConfig, tally: Tally) -> None:
        queued = await self._prepare(held, step, group, config, tally)
        if not queued:
            return
        compiled = await self._compile(group[0], step)
        by_id = {q.delivery_id: q for q in queued}
        record = functools.partial(self._record, held, step, by_id, tally)
        recorded: set[str] = set()

        async def flush(results: list[SendResult]) -> None:
            await record(results)
            recorded.update(r.delivery_id for r in results)

        coalescer: Coalescer[SendResult] = Coalescer(flush)
        commits: Coalescer[str] = Coalescer(functools.partial(self._mark_sending, held))
        results: list[SendResult] = []
        # Rendered and handed over a slice at a time, as a campaign's chunks are: only one slice's messages are
        # held at once (the whole group's kept a worker's memory well above a campaign's).
        step_size = max(
            1, min(self.provider.max_batch_size, self.sending.chunk_for(self.provider.max_batch_size))
        )
        for start in range(0, len(queued), step_size):
            part, unrendered = await self._build(compiled, queued[start : start + step_size])
            results += unrendered
            if not part:
                continue
            if self.limiter is not None:
                await self.limiter.acquire(len(part))
            results += await self.provider.send_batch(
                part, on_commit=commits.submit, on_result=coalescer.submit
            )
        rest = [r for r in results if r.delivery_id not in recorded]
        if rest:
            await record(rest)

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
            ledger = await run_rows.start_steps(s, held, group, tally, now)
            deliveries = await _deliveries(s, [row.delivery_id for row in ledger.values() if row.delivery_id])
            finishes: list[Finish] = []
            fresh: list[Run] = []
            queued: list[_Queued] = []
            for r in group:
                row = ledger[r.id]
                d = deliveries.get(row.delivery_id) if row.delivery_id else None
                if d is None:
                    fresh.append(r)
                elif d.status is DeliveryStatus.SENDING:
                    # The worker that marked it died handing it over: it may have gone; never again.
                    await _in_doubt(s, row, d.id)
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
                Finish(r, FlowStepRunStatus.SKIPPED, reason, None, exit_reason=reason, started=True)
                for r, reason in skips
            ]
            if waiting:
                await run_rows.park(
                    s,
                    held.claim,
                    [r for r, _ in waiting],
                    dict((r.id, at) for r, at in waiting),
                    waiting=False,
                )
                for r, at in waiting:
                    await s.execute(
                        update(FlowStepRun)
                        .where(FlowStepRun.id == ledger[r.id].id)
                        .values(detail=f"frequency cap: waiting until {at.isoformat()}")
                    )
            queued += await _queue(s, held, step, sendable, ledger, now)
            await run_rows.settle(s, held, finishes, tally, now)
            await tally.write(s, held.workspace_id)
        return queued

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

    async def _mark_sending(self, held: Held, delivery_ids: list[str]) -> None:
        """QUEUED → SENDING, committed, for deliveries of runs this worker still holds; raising LeaseLost
        otherwise, so the provider sends none of them. An id passed again (its hand-over retried on a new
        connection) is SENDING already, by this worker."""
        ids = sorted({int(d) for d in delivery_ids})
        async with self.db.transaction() as s:
            # The shared lock makes a takeover by the ticker (FOR UPDATE SKIP LOCKED) pass these runs by
            # until this commit, so whoever takes them next sees these rows SENDING.
            theirs = select(Delivery.flow_run_id).where(one_of(s, Delivery.id, ids, BigInteger()))
            stmt = select(FlowRun.id).where(FlowRun.id.in_(theirs), FlowRun.claim == held.claim)
            if dialect_of(s) == "postgresql":
                stmt = stmt.with_for_update(read=True)
            if len((await s.execute(stmt)).all()) != len(ids):
                raise LeaseLost(f"flow runs of claim {held.claim} were taken over; not sending")
            await s.execute(
                update(Delivery)
                .where(
                    one_of(s, Delivery.id, ids, BigInteger()),
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
                )
                .values(status=DeliveryStatus.SENDING, provider=self.provider_name, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    async def _record(
        self, held: Held, step: Step, by_id: dict[int, _Queued], tally: Tally, results: list[SendResult]
    ) -> None:
        now = self.clock()
        finishes: list[Finish] = []
        retry: dict[int, datetime] = {}
        retry_runs: list[Run] = []
        sent: list[dict[str, Any]] = []
        async with self.db.transaction() as s:
            for r in results:
                q = by_id[int(r.delivery_id)]
                attempts = q.attempts + 1
                if r.ok:
                    sent.append({"b_id": q.delivery_id, "b_pid": r.provider_message_id, "b_att": attempts})
                    finishes.append(Finish(q.run, FlowStepRunStatus.SENT, None, step.next, started=True))
                    continue
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
            await _set_sent(s, held.workspace_id, sent, now)
            await run_rows.settle(s, held, finishes, tally, now)
            if retry_runs:
                await run_rows.park(s, held.claim, retry_runs, retry, waiting=False)
            await tally.write(s, held.workspace_id)


async def _deliveries(session: AsyncSession, ids: Sequence[int | None]) -> dict[int, Delivery]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    rows = (await session.execute(select(Delivery).where(Delivery.id.in_(wanted)))).scalars()
    return {d.id: d for d in rows}


async def _in_doubt(session: AsyncSession, row: FlowStepRun, delivery_id: int) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
        .values(status=DeliveryStatus.IN_DOUBT, last_error=IN_DOUBT_NOTE, updated_at=utcnow())
    )


async def _set_sent(
    session: AsyncSession, workspace_id: int, rows: list[dict[str, Any]], now: datetime
) -> None:
    """SENDING → SENT for ROWS (b_id, b_pid, b_att), as one executemany, with the campaign ledger's statement:
    an ORM UPDATE per delivery (its criteria evaluated against the session, its parameters processed one by
    one) cost more than the send itself."""
    if rows:
        await session.execute(record_sent_statement(workspace_id, now), rows)


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
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
        .values(**values)
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


async def _sendable_lists(session: AsyncSession, subscriber_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(Subscription.subscriber_id, Subscription.list_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.subscriber_id.in_(subscriber_ids),
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
    ledger: dict[int, FlowStepRun],
    now: datetime,
) -> list[_Queued]:
    """A QUEUED delivery per sendable run, named on its ledger row."""
    if not sendable:
        return []
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
            "created_at": now,
            "updated_at": now,
        }
        for r, via in sendable
    ]
    deliveries = Delivery.__table__
    # An executemany (compiled once; a VALUES list of the group's rows was compiled at every call).
    inserted = (
        await session.execute(
            insert(deliveries).returning(deliveries.c.id, deliveries.c.flow_run_id),  # type: ignore[arg-type]
            rows,
        )
    ).all()
    by_run = {int(run_id or 0): int(did) for did, run_id in inserted}
    # Each ledger row names its run's new delivery, by primary key, in one executemany. (A correlated
    # sub-select finding each run's delivery among the group's cost PostgreSQL a probe per pair of them.)
    ledger_rows = FlowStepRun.__table__
    await session.execute(
        update(ledger_rows)  # type: ignore[arg-type]
        .where(ledger_rows.c.id == bindparam("b_id"), ledger_rows.c.workspace_id == held.workspace_id)
        .values(delivery_id=bindparam("b_delivery")),
        [{"b_id": ledger[r.id].id, "b_delivery": by_run[r.id]} for r, _ in sendable],
    )
    return [_Queued(r, by_run[r.id], 0) for r, _ in sendable]
