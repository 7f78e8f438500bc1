"""The send pipeline: one worker run over one batch of one campaign: claim, materialise, chunk loop, release.

The database writes are a :class:`~emailkit.domain.sending.ledger.BatchLedger`'s (the portable one, or
PostgreSQL's fast path), chosen when the sender is built; ``messages`` builds what is sent.

Exactly-once rests on three things:

* the deliveries ledger is unique per (campaign, subscriber), so materialising a batch twice adds nobody twice;
* a delivery is marked SENDING, and committed, right before the provider is given the final go for it (for SMTP:
  before the terminating ``.`` of DATA, so a worker killed earlier leaves only an unfinished transaction that the
  server discards; for the HTTP providers: right before its own request goes out, never a whole chunk ahead);
* batches are claimed with a lease in the database; a worker that dies simply lets its lease expire. The run
  that takes the batch over turns the dead worker's SENDING rows into IN_DOUBT: they may have gone out, so they
  are never handed over again, and they may not have, so they are not counted as sent either. Only an
  operator sends them again (``retry_failed_deliveries(include_in_doubt=True)``).

What a SIGKILL leaves in doubt is what was SENDING at that instant. HTTP providers report each request's
result as it ends (``on_result``), recorded before the request's slot is reused, so that is at most the
requests in flight: ``concurrency`` of them per process (one recipient each for SES and Brevo, up to the
request's size for the batching APIs: 1000 for SendGrid and Mailgun, 500 Postmark, 100 Resend). SMTP results
are handed over in groups of 50 as the server's replies arrive, so there it is
about a group or two per running batch plus the messages on the wire, of which the server can have discarded
at most one per connection (the one whose "." was not written); the rest were delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.sending import (
    Campaign,
    CampaignAbTest,
    CampaignBatch,
    CampaignStatus,
    CampaignVariant,
    DeliveryStatus,
)
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.content.rendering import RenderError, render_failure_reason
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.errors import ErrorCode, NotFound
from emailkit.domain.ports.provider import EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.senders.precedence import campaign_sender_id
from emailkit.domain.senders.routing import SenderProviders, SenderRoute, SenderUnusable
from emailkit.domain.sending import lifecycle, local_time
from emailkit.domain.sending.ab.definition import variants_of
from emailkit.domain.sending.ab.split import Split
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.daily_quota import DailyQuota, SenderWarmup
from emailkit.domain.sending.failures import FailureLog, commonest_failure
from emailkit.domain.sending.ledger import (
    Admission,
    BatchLedger,
    Failed,
    LeaseLost,
    Pending,
    Recorded,
    Sent,
    ledger_for,
)
from emailkit.domain.sending.local_time import LocalSchedule
from emailkit.domain.sending.messages import Compiled, MessageBuilder, test_recipients
from emailkit.domain.sending.progress import ProgressReporter
from emailkit.domain.verp import ReturnPaths
from emailkit.metrics import record as metrics

log = logging.getLogger(__name__)

# Messages rendered between two yields to the event loop.
RENDER_SLICE = 4


@dataclass
class BatchOutcome:
    claimed: bool
    campaign_id: int | None = None
    done: bool = False
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    # Left SENDING by a dead worker, settled by this run.
    in_doubt: int = 0
    # Transient failures remain: run the batch again after this many seconds.
    retry_after: float | None = None
    campaign_finished: bool = False
    # Failed and retried attempts by reason, logged once per batch run.
    failures: FailureLog = field(default_factory=FailureLog)


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    retry_after: float | None = None
    retry_ids: list[int] = field(default_factory=list)

    def add(self, other: _Tally) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retry_ids.extend(other.retry_ids)
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)


@dataclass
class _Content:
    """A batch run's compiled content: the campaign's own, or one per A/B test variant."""

    default: Compiled
    variants: dict[int, Compiled] = field(default_factory=dict)
    # A local-time campaign's schedule: only deliveries already due are sent.
    local: LocalSchedule | None = None
    # The sender it goes through (emailkit.domain.senders.precedence); None: the default sender.
    sender_id: int | None = None

    def of(self, variant_id: int | None) -> Compiled:
        if variant_id is None:
            return self.default
        return self.variants.get(variant_id, self.default)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter."""
    return float(random.uniform(0, min(cap, base * (2 ** max(0, attempt - 1)))))


class CampaignSender:
    """Runs batches. One instance per worker process (it holds the ledger's connections while batches run)."""

    def __init__(
        self,
        db: Database,
        provider: EmailProvider,
        provider_name: str,
        urls: TrackingUrls,
        *,
        limiter: RateLimiter | None = None,
        progress: ProgressReporter | None = None,
        config: SendingConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        senders: SenderProviders | None = None,
    ) -> None:
        self.db = db
        self.provider = provider
        self.provider_name = provider_name
        self.limiter = limiter
        # Routes to the workspace's senders; the one built here knows only this process's default provider.
        self.senders = senders or SenderProviders(db, "", default=self.default_route)
        self.progress = progress
        self.config = config or SendingConfig()
        # What "now" is for the frequency cap and local-time sends; tests move it instead of waiting.
        self.clock = clock
        self.ledger: BatchLedger = ledger_for(
            db, provider_name=provider_name, lease_seconds=self.config.lease_seconds
        )
        bounce_domain = self.config.bounce_domain
        self.messages = MessageBuilder(
            urls,
            unsubscribe_mailto=self.config.unsubscribe_mailto,
            return_paths=ReturnPaths(urls.signer, bounce_domain) if bounce_domain else None,
        )

    def default_route(self) -> SenderRoute:
        return SenderRoute(None, self.provider_name, self.provider, self.limiter)

    # -- the algorithm ------------------------------------------------------------------------------------

    async def run_batch(self, batch_id: int) -> BatchOutcome:
        """Claim the batch, materialise its recipients, send them chunk by chunk, and give the batch back."""
        batch = await self.ledger.claim(batch_id)
        if batch is None:
            return BatchOutcome(claimed=False)
        with structlog.contextvars.bound_contextvars(campaign=batch.campaign_id, batch=batch_id):
            keeper = asyncio.create_task(self._keep_lease(batch))
            try:
                return await self._run_claimed(batch)
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper

    async def _keep_lease(self, batch: CampaignBatch) -> None:
        # Renewed on a timer rather than per chunk: with a slow provider a chunk can outlast the lease, and
        # a live worker's batch must not be taken over.
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                held = await self.ledger.extend_lease(batch)
            except Exception:
                log.warning("batch %s: lease not renewed", batch.id, exc_info=True)
                continue
            if not held:
                # Taken over (this worker was presumed dead) or given back: the run finds out at its next
                # hand-over, which the ledger refuses.
                log.warning("batch %s: lease lost to another worker", batch.id)
                return

    async def _run_claimed(self, batch: CampaignBatch) -> BatchOutcome:
        outcome = BatchOutcome(claimed=True, campaign_id=batch.campaign_id)
        ready = await self._materialise(batch, outcome)
        if ready is None:
            await self.ledger.release(batch, done=False)
            await self._report(batch.campaign_id, final=True)
            return outcome
        compiled, quota = ready
        try:
            async with self.senders.use(compiled.sender_id) as route, self.ledger.lend_connection(batch):
                if route.sender_id is not None and route.warmup is not None:
                    quota.add(SenderWarmup(route.sender_id, route.warmup))
                metrics.emails("campaign", route.provider_name, "skipped", outcome.skipped)
                metrics.emails("campaign", route.provider_name, "in_doubt", outcome.in_doubt)
                with self.ledger.sending_via(batch, route.provider_name, route.sender_id):
                    stopped, retry_after = await self._send_chunks(batch, compiled, outcome, quota, route)
        except SenderUnusable as exc:
            await self._pause_for_sender(batch, str(exc))
            return outcome
        outcome.failures.log(log, batch.id, retry_after)
        if stopped:
            return outcome
        if retry_after is not None:
            # Transient failures left some recipients QUEUED: give the batch back and come again later.
            await self.ledger.release(batch, done=False)
            outcome.retry_after = retry_after
            return outcome
        await self.ledger.release(batch, done=True)
        outcome.done = True
        outcome.campaign_finished = await self._finish_if_complete(batch.campaign_id)
        await self._report(batch.campaign_id, final=outcome.campaign_finished)
        return outcome

    async def _materialise(
        self, batch: CampaignBatch, outcome: BatchOutcome
    ) -> tuple[_Content, DailyQuota] | None:
        """Compile the campaign, insert the batch's ledger rows and settle what a dead worker left in doubt, in
        one transaction; None when the batch must not send: its workspace is archived (the campaign is then
        PAUSED) or its content does not compile (the campaign has then FAILED). With the compiled content
        come its daily limits: the workspace's quota, if it has one (the sender's warm-up is added later).

        A campaign with an A/B test has each variant compiled, and materialises the recipients its phase
        gives a variant: the test share until the winner is sent, then everybody else."""
        async with self.db.transaction() as s:
            campaign, workspace, quota, test, sender_id = await _campaign_and_workspace(s, batch.campaign_id)
            if workspace is WorkspaceStatus.ARCHIVED:
                if await lifecycle.pause_for_archived_workspace(s, campaign.id):
                    log.warning("campaign %s: paused, its workspace is archived", campaign.id)
                return None
            variants = await variants_of(s, campaign.id) if test is not None else []
            try:
                content = await self._compile(s, campaign, variants)
            except Exception as exc:  # a template that no longer renders must stop the campaign, visibly
                log.exception("campaign %s: content does not compile", batch.campaign_id)
                failure = f"The campaign content could not be compiled: {exc}"
            else:
                content.local = await local_time.schedule_of(s, campaign, self.config.default_timezone)
                content.sender_id = sender_id
                outcome.skipped = await self.ledger.materialise(
                    s, batch, _split(test, variants), self._admission(content.local)
                )
                outcome.in_doubt = await self.ledger.settle_in_doubt(s, batch)
                return content, DailyQuota.for_campaign(self.db, campaign, quota)
        async with self.db.transaction() as s:
            await lifecycle.fail(s, batch.campaign_id, failure)
        return None

    def _admission(self, local: LocalSchedule | None) -> Admission | None:
        """The rules new ledger rows are held to; None (the usual send) costs nothing more."""
        cap = self.config.marketing_cap
        if cap is None and local is None:
            return None
        return Admission(now=self.clock(), cap=cap, local=local)

    async def _compile(
        self, session: AsyncSession, campaign: Campaign, variants: Sequence[CampaignVariant]
    ) -> _Content:
        if not variants:
            return _Content(await self.messages.compile(session, campaign))
        compiled = {v.id: await self.messages.compile(session, campaign, v) for v in variants}
        return _Content(compiled[variants[0].id], compiled)

    async def _send_chunks(
        self,
        batch: CampaignBatch,
        compiled: _Content,
        outcome: BatchOutcome,
        quota: DailyQuota,
        route: SenderRoute,
    ) -> tuple[bool, float | None]:
        """Render, send and record the batch chunk by chunk, within the daily limits of its workspace and sender.

        Returns (stopped, retry_after): stopped when the batch was given back or taken over part-way.

        A local-time campaign sends the deliveries due when the run began, and comes again when the next one
        is (or sooner, for a transient failure).
        """
        after = 0
        retry_after: float | None = None
        # One cut-off for the whole run: every delivery due by then is seen in id order, and the rest waits.
        due_by = self.clock() if compiled.local is not None else None
        while True:
            campaign, chunk = await self.ledger.next_chunk(
                batch, after, self.config.chunk_for(self.provider.max_batch_size), due_by
            )
            if not chunk:
                if due_by is not None:
                    retry_after = await self._until_next_due(batch, due_by, retry_after)
                return False, retry_after
            after = chunk[-1].delivery_id
            if await self._halted(batch, campaign):
                return True, None
            admitted = await quota.admit(len(chunk), self.clock())
            if admitted.count:
                tally = await self._send_chunk(batch, compiled, chunk[: admitted.count], outcome, route)
                if tally is None:
                    return True, None
                if tally.retry_after is not None:
                    retry_after = max(retry_after or 0.0, tally.retry_after)
            if admitted.wait is not None:
                # Today's quota or warm-up allowance is spent: the rest stays QUEUED and the batch runs again tomorrow.
                return False, max(retry_after or 0.0, admitted.wait)

    async def _until_next_due(
        self, batch: CampaignBatch, due_by: datetime, retry_after: float | None
    ) -> float | None:
        """When to run the batch again: when its next held delivery is due, or `retry_after` if that is
        sooner; None when nothing is held and nothing is to be retried."""
        later = await self.ledger.next_due(batch, due_by)
        if later is None:
            return retry_after
        wait = max(0.0, (later - self.clock()).total_seconds())
        return wait if retry_after is None else min(retry_after, wait)

    async def _halted(self, batch: CampaignBatch, campaign: Campaign | None) -> bool:
        """Give the batch back when its campaign no longer runs, or has just gone over its error budget."""
        if campaign is None or campaign.status is not CampaignStatus.RUNNING:
            await self.ledger.release(batch, done=False)
            await self._report(
                batch.campaign_id, final=campaign is None or campaign.status is not CampaignStatus.PAUSED
            )
            return True
        if self._over_budget(campaign):
            await self._pause_for_budget(campaign)
            await self.ledger.release(batch, done=False)
            await self._report(batch.campaign_id)
            return True
        return False

    async def _send_chunk(
        self,
        batch: CampaignBatch,
        compiled: _Content,
        chunk: list[Pending],
        outcome: BatchOutcome,
        route: SenderRoute,
    ) -> _Tally | None:
        """Render, hand over and record one chunk; None when the batch was taken over meanwhile."""
        pending = {p.delivery_id: p for p in chunk}
        # A recipient whose data makes the template fail (or go over a render limit) fails alone.
        messages, results = await self._render(compiled, chunk)
        early = _EarlyResults(functools.partial(self._record, batch, pending))
        try:
            results.extend(await self._hand_over(batch, messages, early, route))
        except LeaseLost:
            # The new owner settles what this worker left SENDING as in doubt; recording it here too
            # would count it twice.
            log.warning("batch %s: taken over by another worker; stopping", batch.id)
            metrics.batch("lease_lost")
            return None
        rest = [r for r in results if r.delivery_id not in early.recorded]
        campaign = early.campaign
        if rest or not early.recorded:
            late, campaign = await self._record(batch, pending, rest)
            early.tally.add(late)
        tally = early.tally
        outcome.sent += tally.sent
        outcome.failed += tally.failed
        # Per chunk, not per message: three increments whatever the chunk's size.
        metrics.emails("campaign", route.provider_name, "sent", tally.sent)
        metrics.emails("campaign", route.provider_name, "failed", tally.failed)
        metrics.emails("campaign", route.provider_name, "deferred", len(tally.retry_ids))
        if tally.failed or tally.retry_ids:
            outcome.failures.add(results, pending, tally.retry_ids)
        await self._report(batch.campaign_id, campaign=campaign)
        return tally

    async def _render(
        self, compiled: _Content, chunk: list[Pending]
    ) -> tuple[list[OutgoingMessage], list[SendResult]]:
        """The chunk's messages, and a failed result for each recipient whose message did not render."""
        messages = []
        unrendered: list[SendResult] = []
        for i, p in enumerate(chunk, 1):
            try:
                messages.append(self.messages.build(compiled.of(p.variant_id), p))
            except RenderError as exc:
                reason = render_failure_reason(exc)
                unrendered.append(SendResult.failed(str(p.delivery_id), reason, transient=False))
            if i % RENDER_SLICE == 0:
                # Rendering a chunk takes tens of ms of CPU; let the other batches' SMTP sessions and
                # commits run meanwhile instead of stalling them all.
                await asyncio.sleep(0)
        return messages, unrendered

    async def _hand_over(
        self, batch: CampaignBatch, messages: list[OutgoingMessage], early: _EarlyResults, route: SenderRoute
    ) -> list[SendResult]:
        """Give the messages to the sender's provider, which marks each SENDING right before its final go."""
        results: list[SendResult] = []
        provider, limiter = route.provider, route.limiter
        step = max(1, provider.max_batch_size)
        on_commit = functools.partial(self.ledger.mark_sending, batch)
        for start in range(0, len(messages), step):
            part = messages[start : start + step]
            if limiter is not None:
                await limiter.acquire(len(part))
            results.extend(await route.send_batch(part, on_commit=on_commit, on_result=early.submit))
        return results

    # -- recording ----------------------------------------------------------------------------------------

    async def _record(
        self, batch: CampaignBatch, pending: dict[int, Pending], results: list[SendResult]
    ) -> tuple[_Tally, Campaign | None]:
        """Store the results and bump the counters; returns the tally and, for the progress report, the
        campaign as the recording left it (read in its transaction rather than in a session of its own)."""
        sent, failed = self._outcomes(pending, results)
        recorded = await self.ledger.record(batch, sent, failed, with_campaign=self.progress is not None)
        return self._tally(recorded), recorded.campaign

    def _outcomes(
        self, pending: dict[int, Pending], results: list[SendResult]
    ) -> tuple[list[Sent], list[Failed]]:
        """Each result as the ledger row it becomes: SENT, QUEUED again for a retry, or FAILED."""
        sent, failed = [], []
        for r in results:
            did = int(r.delivery_id)
            attempts = pending[did].attempts + 1
            if r.ok:
                sent.append(Sent(did, r.provider_message_id, attempts, pending[did].variant_id))
                continue
            error = (r.error or "unknown error")[:2000]
            retry = r.transient and attempts < self.config.max_attempts
            if r.transient and not retry:
                error = f"gave up after {attempts} attempts: {error}"
            status = DeliveryStatus.QUEUED if retry else DeliveryStatus.FAILED
            failed.append(Failed(did, status, attempts, error, r.retry_after))
        return sent, failed

    def _tally(self, recorded: Recorded) -> _Tally:
        tally = _Tally(sent=recorded.sent, failed=recorded.failed)
        for f in recorded.failures:
            if f.status is not DeliveryStatus.QUEUED:
                continue
            wait = (
                f.retry_after
                if f.retry_after is not None
                else backoff(f.attempts, self.config.retry_base_seconds, self.config.retry_max_seconds)
            )
            tally.retry_after = max(tally.retry_after or 0.0, wait)
            tally.retry_ids.append(f.delivery_id)
        return tally

    # -- the campaign -------------------------------------------------------------------------------------

    def _over_budget(self, campaign: Campaign) -> bool:
        attempted = campaign.sent_count + campaign.failed_count
        return (
            campaign.failed_count >= self.config.error_budget_min_sample
            and attempted > 0
            and campaign.failed_count / attempted > self.config.error_budget_ratio
        )

    async def _pause_for_budget(self, campaign: Campaign) -> None:
        reason = (
            f"Paused automatically: {campaign.failed_count} of {campaign.sent_count + campaign.failed_count} "
            f"recipients failed (error budget {self.config.error_budget_ratio:.0%}); check the failed deliveries, "
            "fix the cause, then resume"
        )
        async with self.db.transaction() as s:
            said = await commonest_failure(s, campaign.id)
            if said is not None:
                reason = f"{reason}. The provider said: {said}"[:2000]
            await lifecycle.pause_automatically(s, campaign.id, reason)
        log.warning("campaign %s: %s", campaign.id, reason)

    async def _pause_for_sender(self, batch: CampaignBatch, problem: str) -> None:
        reason = f"Paused automatically: its sender cannot send: {problem}; fix the sender, then resume"[
            :2000
        ]
        async with self.db.transaction() as s:
            await lifecycle.pause_automatically(s, batch.campaign_id, reason)
        await self.ledger.release(batch, done=False)
        log.warning("campaign %s: %s", batch.campaign_id, reason)
        await self._report(batch.campaign_id, final=True)

    async def _finish_if_complete(self, campaign_id: int) -> bool:
        async with self.db.transaction() as s:
            ended = await lifecycle.finish_if_complete(s, campaign_id)
        if ended is CampaignStatus.FAILED:
            log.warning("campaign %s: every attempted recipient failed; marked FAILED", campaign_id)
        return ended is not None

    async def _report(
        self, campaign_id: int, *, final: bool = False, campaign: Campaign | None = None
    ) -> None:
        if self.progress is None:
            return
        if campaign is None:
            async with self.db.session() as s:
                campaign = await s.get(Campaign, campaign_id)
        if campaign is not None:
            await self.progress.report(campaign, final=final)

    # -- test sends ---------------------------------------------------------------------------------------

    async def send_test(
        self,
        campaign_id: int,
        emails: Sequence[str],
        *,
        as_subscriber: int | None = None,
        variant_id: int | None = None,
    ) -> list[SendResult]:
        """Render the campaign (or one of its A/B test variants) for each address and send it now, marked
        [Test], untracked, outside the ledger (see :func:`~emailkit.domain.sending.messages.test_recipients`
        for whose data personalises it)."""
        async with self.db.session() as s:
            campaign = await s.get(Campaign, campaign_id)
            if campaign is None:
                raise NotFound("Campaign", field="campaignId", code=ErrorCode.CAMPAIGN_NOT_FOUND)
            variant = None
            if variant_id is not None:
                variant = next((v for v in await variants_of(s, campaign_id) if v.id == variant_id), None)
                if variant is None:
                    raise NotFound("Variant", field="variantId", code=ErrorCode.VARIANT_NOT_FOUND)
            compiled = await self.messages.compile(s, campaign, variant)
            recipients = await test_recipients(s, emails, as_subscriber)
            sender_id = (
                await s.execute(select(campaign_sender_id()).where(Campaign.id == campaign_id))
            ).scalar_one_or_none()
        build = functools.partial(self.messages.build, compiled, test=True)
        # Off the event loop: this runs in the API process, and a render may take up to its time limit.
        messages = [await asyncio.to_thread(build, p) for p in recipients]
        async with self.senders.use(sender_id) as route:
            return await route.send_batch(messages)


async def _campaign_and_workspace(
    session: AsyncSession, campaign_id: int
) -> tuple[Campaign, WorkspaceStatus, int | None, CampaignAbTest | None, int | None]:
    """The campaign, whether its workspace is active, its daily email quota, its A/B test and the sender it
    goes through, in the one read a batch run makes of it anyway."""
    stmt = (
        select(
            Campaign,
            Workspace.status,
            Workspace.quota_emails_per_day,
            CampaignAbTest,
            campaign_sender_id(),
        )
        .join(Workspace, Workspace.id == Campaign.workspace_id)
        .outerjoin(CampaignAbTest, CampaignAbTest.campaign_id == Campaign.id)
        .where(Campaign.id == campaign_id)
    )
    campaign, status, quota, test, sender_id = (await session.execute(stmt)).one()
    return campaign, status, quota, test, sender_id


def _split(test: CampaignAbTest | None, variants: Sequence[CampaignVariant]) -> Split | None:
    """Who this run materialises and with which variant; None for a campaign without an A/B test."""
    if test is None or not variants:
        return None
    # A winner picked while the test is still being sent goes to the rest only once the rest is sent.
    winner = test.winner_variant_id if test.remainder_started_at is not None else None
    return Split(test.campaign_id, tuple(v.id for v in variants), test.test_share, winner)


class _EarlyResults:
    """Records results a provider reports as each request ends, so they do not stay SENDING until the chunk
    is done (a crash would leave them in doubt although their outcome was known); concurrent reports are
    recorded together, one group at a time."""

    def __init__(
        self, record: Callable[[list[SendResult]], Awaitable[tuple[_Tally, Campaign | None]]]
    ) -> None:
        self._record = record
        self._coalescer: Coalescer[SendResult] = Coalescer(self._flush)
        self.recorded: set[str] = set()
        self.tally = _Tally()
        self.campaign: Campaign | None = None

    async def submit(self, results: Sequence[SendResult]) -> None:
        await self._coalescer.submit(results)

    async def _flush(self, results: list[SendResult]) -> None:
        tally, self.campaign = await self._record(results)
        self.recorded.update(r.delivery_id for r in results)
        self.tally.add(tally)
