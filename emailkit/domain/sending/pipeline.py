"""The send pipeline: one worker run over one batch of one campaign.

Exactly-once rests on three things:

* the deliveries ledger is unique per (campaign, subscriber), so materialising a batch twice adds nobody twice;
* a delivery is marked SENDING, and committed, right before the provider is given the final go for it (for SMTP:
  before the terminating ``.`` of DATA, so a worker killed earlier leaves only an unfinished transaction that the
  server discards; for SES and SendGrid: right before its own request goes out, never a whole chunk ahead);
* batches are claimed with a lease in the database; a worker that dies simply lets its lease expire. The run
  that takes the batch over turns the dead worker's SENDING rows into IN_DOUBT: they may have gone out, so they
  are never handed over again, and they may not have, so they are not counted as sent either. Only an
  operator sends them again (``retry_failed_deliveries(include_in_doubt=True)``).

What a SIGKILL leaves in doubt is what was SENDING at that instant. HTTP providers report each request's
result as it ends (``on_result``), recorded before the request's slot is reused, so that is at most the
requests in flight: ``concurrency`` of them per process (one recipient each for SES and for personalised
SendGrid mail). SMTP results are handed over in groups of 50 as the server's replies arrive, so there it is
about a group or two per running batch plus the messages on the wire, of which the server can have discarded
at most one per connection (the one whose "." was not written); the rest were delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    Update,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.content import ContentFormat, Template
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.audience import targeting as audience
from emailkit.domain.content.rendering import (
    CLICK_CALL,
    PIXEL_CALL,
    CompiledContent,
    RenderError,
    TrackedTemplate,
    campaign_vars,
    compile_content,
    render_failure_reason,
    template_context,
)
from emailkit.domain.content.tracked_urls import TrackingUrls, add_open_pixel, rewrite_links
from emailkit.domain.errors import ErrorCode, NotFound
from emailkit.domain.ports.provider import DELIVERY_TAG, Address, EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.ports.webhooks import META_CAMPAIGN, META_SUBSCRIBER
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.failures import FailureLog, commonest_failure
from emailkit.domain.sending.pipeline_pg import BatchConnection, Pending
from emailkit.domain.sending.progress import ProgressReporter
from emailkit.domain.sending.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Messages rendered between two yields to the event loop.
RENDER_SLICE = 4

# Rows a result may still be recorded on: not yet handed over (failed before it) or handed over by this run.
_UNSETTLED = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)

# Who a test email is personalised for when its address is nobody's and no subscriber was chosen.
SAMPLE_NAME = "Sam Sample"
SAMPLE_ATTRIBUTES: dict[str, Any] = {}

IN_DOUBT_NOTE = "outcome unknown: the worker stopped while handing this message to the provider"


class LeaseLost(Exception):
    """Another worker took the batch over (this one was presumed dead): it must not hand over anything more."""


@dataclass
class BatchOutcome:
    claimed: bool
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
class _Compiled:
    updated_at: datetime
    content: CompiledContent
    campaign: dict[str, Any]
    from_: Address
    reply_to: Address | None
    track_opens: bool
    track_clicks: bool
    list_id_header: str
    tracked: TrackedTemplate


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    retry_after: float | None = None
    retry_ids: list[int] = field(default_factory=list)


async def _driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one (in autocommit mode, so no transaction is open)."""
    return (await conn.get_raw_connection()).driver_connection


def _unnest(*arrays: tuple[str, Any], name: str = "v") -> Any:
    """``unnest(CAST(:a AS t[]), ...) AS v(a, ...)``: a batch of rows as a few array parameters."""
    return (
        func.unnest(*(cast(bindparam(key), postgresql.ARRAY(type_)) for key, type_ in arrays))
        .table_valued(*(key for key, _ in arrays))
        .render_derived(name)
    )


def _materialise_pg() -> Any:
    # A batch's ledger rows as one statement with array parameters (no per-row bind processing, one
    # execution on the server); Python-side column defaults are added by from_select.
    table = Delivery.__table__
    rows = _unnest(
        ("sids", BigInteger), ("emails", Text), ("statuses", Text), ("reasons", Text), ("vias", Text)
    )
    now = bindparam("now", type_=table.c.created_at.type)
    columns = [
        "campaign_id",
        "subscriber_id",
        "email",
        "status",
        "skip_reason",
        "via_list_ids",
        "created_at",
        "updated_at",
    ]
    source = select(
        bindparam("campaign_id", type_=BigInteger),
        rows.c.sids,
        rows.c.emails,
        rows.c.statuses,
        rows.c.reasons,
        cast(rows.c.vias, postgresql.JSONB),
        now,
        now,
    )
    return (
        postgresql.insert(table)  # type: ignore[arg-type]
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
        .returning(table.c.status)
    )


def _record_sent_pg() -> Any:
    # One UPDATE joined to the arrays, where executemany runs one statement per row on the server.
    table = Delivery.__table__
    rows = _unnest(("ids", BigInteger), ("pids", Text), ("atts", Integer))
    now = bindparam("now", type_=table.c.sent_at.type)
    return (
        update(table)  # type: ignore[arg-type]
        .where(table.c.id == rows.c.ids, table.c.status == DeliveryStatus.SENDING)
        .values(
            status=DeliveryStatus.SENT,
            provider_message_id=rows.c.pids,
            attempts=rows.c.atts,
            sent_at=now,
            updated_at=now,
            last_error=None,
        )
    )


_MATERIALISE_PG = _materialise_pg()
_RECORD_SENT_PG = _record_sent_pg()


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter."""
    return float(random.uniform(0, min(cap, base * (2 ** max(0, attempt - 1)))))


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class CampaignSender:
    """Runs batches. One instance per worker process (it caches compiled campaigns)."""

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
    ) -> None:
        self.db = db
        self.provider = provider
        self.provider_name = provider_name
        self.urls = urls
        self.limiter = limiter
        self.progress = progress
        self.config = config or SendingConfig()
        self._host = urlsplit(urls.base).hostname or "localhost"
        # Single statements committed on their own (no BEGIN/COMMIT round trips); same pool as `db`.
        self._autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._batch_connections: dict[int, BatchConnection] = {}

    # -- claiming -----------------------------------------------------------------------------------------

    async def _claim(self, batch_id: int) -> CampaignBatch | None:
        now = utcnow()
        async with self.db.transaction() as s:
            stmt = (
                update(CampaignBatch)
                .where(
                    CampaignBatch.id == batch_id,
                    or_(
                        CampaignBatch.status == BatchStatus.PENDING,
                        and_(CampaignBatch.status == BatchStatus.RUNNING, CampaignBatch.lease_until < now),
                    ),
                    lifecycle.is_running(CampaignBatch.campaign_id),
                )
                .values(
                    status=BatchStatus.RUNNING,
                    lease_until=now + timedelta(seconds=self.config.lease_seconds),
                    attempts=CampaignBatch.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if (await s.execute(stmt)).rowcount != 1:  # type: ignore[attr-defined]
                return None
            return await s.get(CampaignBatch, batch_id)

    def _lease_stmt(self, batch_id: int) -> Update:
        return (
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id)
            .values(lease_until=utcnow() + timedelta(seconds=self.config.lease_seconds))
        )

    async def _extend_lease(self, batch_id: int) -> None:
        async with self.db.transaction() as s:
            await s.execute(self._lease_stmt(batch_id))

    async def _keep_lease(self, batch_id: int) -> None:
        # Renewed on a timer rather than per chunk: with a slow provider a chunk can outlast the lease, and
        # a live worker's batch must not be taken over.
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self._extend_lease(batch_id)
            except Exception:
                log.warning("batch %s: lease not renewed", batch_id, exc_info=True)

    async def _release(self, batch: CampaignBatch, *, done: bool) -> None:
        """Give the batch back (or mark it done), unless another worker has taken it over meanwhile."""
        async with self.db.transaction() as s:
            await s.execute(
                update(CampaignBatch)
                .where(
                    CampaignBatch.id == batch.id,
                    CampaignBatch.status == BatchStatus.RUNNING,
                    CampaignBatch.attempts == batch.attempts,
                )
                .values(status=BatchStatus.DONE if done else BatchStatus.PENDING, lease_until=None)
            )

    # -- compiling ----------------------------------------------------------------------------------------

    async def _content(self, s: AsyncSession, campaign: Campaign) -> _Compiled:
        # Rebuilt every run (compile_content keeps its own cache by content), so an edited template is used.
        body, fmt = campaign.body, campaign.format
        if campaign.template_id is not None:
            tpl = await s.get(Template, campaign.template_id)
            if tpl is not None:
                body, fmt = tpl.body, tpl.format
        content = compile_content(
            body or "", fmt or ContentFormat.HTML, subject=campaign.subject, plain_text=campaign.plain_text
        )
        compiled = _Compiled(
            updated_at=campaign.updated_at,
            content=content,
            campaign=campaign_vars(campaign),
            from_=Address(campaign.from_email, campaign.from_name or ""),
            reply_to=Address(campaign.reply_to) if campaign.reply_to else None,
            track_opens=campaign.track_opens,
            track_clicks=campaign.track_clicks,
            list_id_header=f'"{_header_safe(campaign.name)}" <campaign-{campaign.id}.{self._host}>',
            tracked=content.tracked(clicks=campaign.track_clicks, opens=campaign.track_opens),
        )
        return compiled

    # -- the ledger ---------------------------------------------------------------------------------------

    async def _materialise(self, s: AsyncSession, batch: CampaignBatch) -> int:
        """Insert this batch's ledger rows (idempotent); returns how many new SKIPPED rows were added."""
        target = await audience.load_target(s, batch.campaign_id)
        now = utcnow()
        recipients = []
        for sid, email, status, sendable, unconfirmed, via in await s.execute(
            audience.recipients_stmt(target, batch.lo_id, batch.hi_id)
        ):
            reason = audience.skip_reason(status, int(sendable or 0), int(unconfirmed or 0))
            # The lists that make a QUEUED recipient sendable: what an unsubscribe from this delivery leaves.
            recipients.append(
                (sid, email, DeliveryStatus.SKIPPED, reason, None)
                if reason
                else (sid, email, DeliveryStatus.QUEUED, None, via)
            )
        if not recipients:
            return 0
        if self.db.dialect == "postgresql":
            sids, emails, statuses, reasons, vias = zip(*recipients, strict=True)
            params = {
                "campaign_id": batch.campaign_id,
                "sids": list(sids),
                "emails": list(emails),
                "statuses": [st.value for st in statuses],
                "reasons": list(reasons),
                # "3,8" (ordered by the database) is the JSON array [3,8] without its brackets.
                "vias": [None if v is None else f"[{v}]" for v in vias],
                "now": now,
            }
            result = await s.execute(_MATERIALISE_PG, params)
        else:
            table = Delivery.__table__
            stmt = (
                _insert(self.db.dialect)(table)
                .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
                .returning(table.c.status)
            )
            rows = [
                {
                    "campaign_id": batch.campaign_id,
                    "subscriber_id": sid,
                    "email": email,
                    "status": status,
                    "skip_reason": reason,
                    "via_list_ids": None if via is None else audience.parse_id_list(via),
                    "created_at": now,
                    "updated_at": now,
                }
                for sid, email, status, reason, via in recipients
            ]
            # One executemany: compiled once (cached) and sent as multi-row pages, where a .values(rows)
            # statement per page would be compiled afresh every time (≈18% of a worker's CPU when measured).
            result = await s.execute(stmt, rows)
        skipped = sum(1 for st in result.scalars() if st == DeliveryStatus.SKIPPED)
        if skipped:
            await self._bump(s, batch.campaign_id, skipped=skipped)
        return skipped

    async def _settle_in_doubt(self, s: AsyncSession, batch: CampaignBatch) -> int:
        """SENDING rows left by a dead worker may or may not have gone out: IN_DOUBT, never sent again."""
        stmt = (
            update(Delivery)
            .where(
                Delivery.campaign_id == batch.campaign_id,
                Delivery.subscriber_id.between(batch.lo_id, batch.hi_id),
                Delivery.status == DeliveryStatus.SENDING,
            )
            .values(status=DeliveryStatus.IN_DOUBT, last_error=IN_DOUBT_NOTE, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        n = int((await s.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
        if n:
            await self._bump(s, batch.campaign_id, in_doubt=n)
        return n

    @staticmethod
    async def _bump(
        s: AsyncSession,
        campaign_id: int,
        *,
        sent: int = 0,
        failed: int = 0,
        skipped: int = 0,
        in_doubt: int = 0,
    ) -> None:
        await s.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(
                sent_count=Campaign.sent_count + sent,
                failed_count=Campaign.failed_count + failed,
                skipped_count=Campaign.skipped_count + skipped,
                in_doubt_count=Campaign.in_doubt_count + in_doubt,
            )
            .execution_options(synchronize_session=False)
        )

    async def _next_chunk(
        self, batch: CampaignBatch, after_id: int, limit: int
    ) -> tuple[Campaign | None, list[Pending]]:
        """Extend the lease, then read the campaign's state and the next QUEUED deliveries: one transaction
        per chunk instead of three."""
        stmt = (
            select(
                Delivery.id,
                Delivery.subscriber_id,
                Delivery.email,
                Delivery.attempts,
                Subscriber.name,
                Subscriber.attributes,
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(
                Delivery.campaign_id == batch.campaign_id,
                Delivery.subscriber_id.between(batch.lo_id, batch.hi_id),
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.id > after_id,
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
        lent = self._batch_connections.get(batch.id)
        if lent is not None:
            return await lent.next_chunk(
                campaign_id=batch.campaign_id,
                batch_id=batch.id,
                lease_until=utcnow() + timedelta(seconds=self.config.lease_seconds),
                lo_id=batch.lo_id,
                hi_id=batch.hi_id,
                after_id=after_id,
                limit=limit,
            )
        async with self.db.transaction() as s:
            await s.execute(self._lease_stmt(batch.id))
            campaign = await s.get(Campaign, batch.campaign_id, populate_existing=True)
            chunk = [
                Pending(did, sid, email, name or "", dict(attrs or {}), attempts)
                for did, sid, email, attempts, name, attrs in await s.execute(stmt)
            ]
        return campaign, chunk

    # -- rendering ----------------------------------------------------------------------------------------

    def _message(self, c: _Compiled, p: Pending, *, test: bool = False) -> OutgoingMessage:
        """One recipient's message. Test sends carry no tracking and a marked subject, and touch no ledger."""
        did_str = f"test-{secrets.token_hex(8)}" if test else str(p.delivery_id)
        unsubscribe = f"{self.urls.base}/u/test" if test else self.urls.unsubscribe(p.delivery_id)
        tracking: dict[str, Any] = {}
        tracked = None if test else c.tracked
        if tracked is not None and tracked.render is not None:
            did, links, urls = p.delivery_id, tracked.links, self.urls
            tracking[CLICK_CALL] = lambda i: urls.click(did, links[i])
            tracking[PIXEL_CALL] = lambda: urls.open_pixel(did)
        rendered = c.content.render(
            template_context(
                subscriber={
                    "id": p.subscriber_id,
                    "email": p.email,
                    "name": p.name,
                    "attributes": p.attributes,
                    "status": "ENABLED",
                },
                campaign=c.campaign,
                unsubscribe_url=unsubscribe,
                **tracking,
            ),
            tracked=tracked,
        )
        html = rendered.html
        if html is not None and tracked is not None:
            # What could not be compiled into the template is rewritten per message.
            if c.track_clicks and not tracked.clicks:
                did = p.delivery_id
                html = rewrite_links(
                    html, lambda url: self.urls.click(did, url), skip=frozenset({unsubscribe})
                )
            if c.track_opens and not tracked.pixel:
                html = add_open_pixel(html, self.urls.open_pixel(p.delivery_id))
        list_unsubscribe = f"<{unsubscribe}>"
        if self.config.unsubscribe_mailto:
            subject = quote(f"unsubscribe {did_str}")
            list_unsubscribe += f", <mailto:{self.config.unsubscribe_mailto}?subject={subject}>"
        return OutgoingMessage(
            delivery_id=did_str,
            sender=c.from_.email,
            to=Address(p.email, p.name),
            from_=c.from_,
            reply_to=c.reply_to,
            subject=f"[Test] {rendered.subject}" if test else rendered.subject,
            html=html,
            text=rendered.text,
            headers={
                "List-Unsubscribe": list_unsubscribe,
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "List-Id": c.list_id_header,
                "Precedence": "bulk",
            },
            tags={
                DELIVERY_TAG: did_str,
                META_CAMPAIGN: str(c.campaign["id"]),
                META_SUBSCRIBER: str(p.subscriber_id or ""),
            },
        )

    async def send_test(
        self, campaign_id: int, emails: Sequence[str], *, as_subscriber: int | None = None
    ) -> list[SendResult]:
        """Render the campaign for each address and send it now: with `as_subscriber`'s data when given, else
        with that address's own subscriber data, else with a sample subscriber's (so personalisation shows)."""
        async with self.db.session() as s:
            campaign = await s.get(Campaign, campaign_id)
            if campaign is None:
                raise NotFound("Campaign", field="campaignId", code=ErrorCode.CAMPAIGN_NOT_FOUND)
            compiled = await self._content(s, campaign)
            chosen = None
            if as_subscriber is not None:
                chosen = await s.get(Subscriber, as_subscriber)
                if chosen is None:
                    raise NotFound("Subscriber", field="subscriberId", code=ErrorCode.SUBSCRIBER_NOT_FOUND)
            known = {
                row.email: row
                for row in (await s.execute(select(Subscriber).where(Subscriber.email.in_(emails)))).scalars()
            }
        messages = []
        for email in emails:
            sub = chosen or known.get(email)
            if sub is None:
                pending = Pending(0, None, email, SAMPLE_NAME, dict(SAMPLE_ATTRIBUTES), 0)
            else:
                pending = Pending(0, sub.id, email, sub.name, dict(sub.attributes or {}), 0)
            # Off the event loop: this runs in the API process, and a render may take up to its time limit.
            messages.append(
                await asyncio.to_thread(functools.partial(self._message, test=True), compiled, pending)
            )
        return await self.provider.send_batch(messages)

    # -- sending ------------------------------------------------------------------------------------------

    async def _mark_sending(self, batch: CampaignBatch, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        if self.db.dialect == "postgresql":
            await self._mark_sending_pg(batch, [int(d) for d in delivery_ids])
            return
        async with self.db.transaction() as s:
            # Only while the batch is still this claim's; the shared lock makes a takeover wait for this
            # commit, so the new owner's settling sees these rows (and nobody hands them over twice).
            held = select(CampaignBatch.id).where(
                CampaignBatch.id == batch.id,
                CampaignBatch.status == BatchStatus.RUNNING,
                CampaignBatch.attempts == batch.attempts,
            )
            if (await s.execute(held.with_for_update(read=True))).first() is None:
                raise LeaseLost(f"batch {batch.id} was taken over by another worker")
            await s.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_([int(d) for d in delivery_ids]), Delivery.status == DeliveryStatus.QUEUED
                )
                .values(status=DeliveryStatus.SENDING, provider=self.provider_name)
                .execution_options(synchronize_session=False)
            )

    @contextlib.asynccontextmanager
    async def _batch_connection(self, batch_id: int) -> AsyncIterator[None]:
        """Lend a running batch one connection for its per-chunk statements and commit hooks (PostgreSQL).

        Every pool checkout pings the server (SQLAlchemy's asyncpg ping is BEGIN, a query and ROLLBACK):
        three round trips that, per hook call, cost more than the hook's own statement.
        """
        if self.db.dialect != "postgresql":
            yield
            return
        async with self._autocommit.connect() as conn:
            self._batch_connections[batch_id] = BatchConnection(await _driver_connection(conn))
            try:
                yield
            finally:
                del self._batch_connections[batch_id]

    async def _mark_sending_pg(self, batch: CampaignBatch, ids: list[int]) -> None:
        # The same check, lock and update as the transaction above, as one statement committed on its own:
        # one round trip instead of four (BEGIN, SELECT ... FOR SHARE, UPDATE, COMMIT). The smtp provider
        # calls this for every few messages, so it is on the hot path of a send.
        lent = self._batch_connections.get(batch.id)
        if lent is not None:
            held = await lent.mark_sending(batch.id, batch.attempts, self.provider_name, ids)
        else:
            async with self._autocommit.connect() as conn:
                once = BatchConnection(await _driver_connection(conn))
                held = await once.mark_sending(batch.id, batch.attempts, self.provider_name, ids)
        if not held:
            raise LeaseLost(f"batch {batch.id} was taken over by another worker")

    async def _record(
        self,
        campaign_id: int,
        pending: dict[int, Pending],
        results: list[SendResult],
        batch_id: int | None = None,
    ) -> tuple[_Tally, Campaign | None]:
        """Store the results and bump the counters; returns the tally and, for the progress report, the
        campaign as this transaction leaves it (read here rather than in a session of its own)."""
        tally = _Tally()
        now = utcnow()
        cfg = self.config
        lent = self._batch_connections.get(batch_id) if batch_id is not None else None
        if lent is not None and results and all(r.ok for r in results):
            # The usual chunk: everyone sent. One statement records them and returns the counters.
            ids = [int(r.delivery_id) for r in results]
            campaign, tally.sent = await lent.record_sent(
                campaign_id=campaign_id,
                ids=ids,
                provider_ids=[r.provider_message_id for r in results],
                attempts=[pending[i].attempts + 1 for i in ids],
                now=now,
            )
            return tally, campaign
        async with self.db.transaction() as s:
            sent_rows = []
            for r in results:
                did = int(r.delivery_id)
                attempts = pending[did].attempts + 1
                if r.ok:
                    sent_rows.append({"b_id": did, "b_pid": r.provider_message_id, "b_att": attempts})
                    continue
                error = (r.error or "unknown error")[:2000]
                retry = r.transient and attempts < cfg.max_attempts
                status = DeliveryStatus.QUEUED if retry else DeliveryStatus.FAILED
                if r.transient and not retry:
                    error = f"gave up after {attempts} attempts: {error}"
                # Failures are rare: one statement each keeps the code plain. A row a takeover has made
                # IN_DOUBT meanwhile stays so (see _RECORD_SENT).
                changed = await s.execute(
                    update(Delivery)
                    .where(Delivery.id == did, Delivery.status.in_(_UNSETTLED))
                    .values(status=status, attempts=attempts, last_error=error, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not changed.rowcount:  # type: ignore[attr-defined]
                    continue
                if retry:
                    wait = (
                        r.retry_after
                        if r.retry_after is not None
                        else backoff(attempts, cfg.retry_base_seconds, cfg.retry_max_seconds)
                    )
                    tally.retry_after = max(tally.retry_after or 0.0, wait)
                    tally.retry_ids.append(did)
                else:
                    tally.failed += 1
            if sent_rows and self.db.dialect == "postgresql":
                params = {
                    "ids": [row["b_id"] for row in sent_rows],
                    "pids": [row["b_pid"] for row in sent_rows],
                    "atts": [row["b_att"] for row in sent_rows],
                    "now": now,
                }
                tally.sent = int((await s.execute(_RECORD_SENT_PG, params)).rowcount or 0)  # type: ignore[attr-defined]
            elif sent_rows:
                recorded = await s.execute(
                    update(Delivery.__table__)  # type: ignore[arg-type]
                    .where(
                        Delivery.__table__.c.id == bindparam("b_id"),
                        Delivery.__table__.c.status == DeliveryStatus.SENDING,
                    )
                    .values(
                        status=DeliveryStatus.SENT,
                        provider_message_id=bindparam("b_pid"),
                        attempts=bindparam("b_att"),
                        sent_at=now,
                        updated_at=now,
                        last_error=None,
                    ),
                    sent_rows,
                )
                tally.sent = int(recorded.rowcount or 0)  # type: ignore[attr-defined]
            if tally.sent or tally.failed:
                await self._bump(s, campaign_id, sent=tally.sent, failed=tally.failed)
            campaign = None
            if self.progress is not None:
                campaign = await s.get(Campaign, campaign_id, populate_existing=True)
        return tally, campaign

    async def _campaign_state(self, campaign_id: int) -> Campaign | None:
        async with self.db.session() as s:
            return await s.get(Campaign, campaign_id)

    async def _over_budget(self, campaign: Campaign) -> bool:
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

    async def _fail_campaign(self, campaign_id: int, reason: str) -> None:
        async with self.db.transaction() as s:
            await lifecycle.fail(s, campaign_id, reason)

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
            campaign = await self._campaign_state(campaign_id)
        if campaign is not None:
            await self.progress.report(campaign, final=final)

    async def run_batch(self, batch_id: int) -> BatchOutcome:
        batch = await self._claim(batch_id)
        if batch is None:
            return BatchOutcome(claimed=False)
        keeper = asyncio.create_task(self._keep_lease(batch_id))
        try:
            return await self._run_claimed(batch)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _send_chunks(
        self, batch: CampaignBatch, compiled: _Compiled, outcome: BatchOutcome
    ) -> tuple[bool, float | None]:
        """Render, send and record the batch chunk by chunk.

        Returns (stopped, retry_after): stopped when the batch was given back or taken over part-way.
        """
        batch_id, campaign_id = batch.id, batch.campaign_id
        after = 0
        retry_after: float | None = None
        while True:
            campaign, chunk = await self._next_chunk(batch, after, self.config.chunk_size)
            if not chunk:
                break
            after = chunk[-1].delivery_id
            if campaign is None or campaign.status is not CampaignStatus.RUNNING:
                await self._release(batch, done=False)
                await self._report(
                    campaign_id, final=campaign is None or campaign.status is not CampaignStatus.PAUSED
                )
                return True, None
            if await self._over_budget(campaign):
                await self._pause_for_budget(campaign)
                await self._release(batch, done=False)
                await self._report(campaign_id)
                return True, None
            pending = {p.delivery_id: p for p in chunk}
            messages = []
            # A recipient whose data makes the template fail (or go over a render limit) fails alone.
            unrendered: list[SendResult] = []
            for i, p in enumerate(chunk, 1):
                try:
                    messages.append(self._message(compiled, p))
                except RenderError as exc:
                    reason = render_failure_reason(exc)
                    unrendered.append(SendResult.failed(str(p.delivery_id), reason, transient=False))
                if i % RENDER_SLICE == 0:
                    # Rendering a chunk takes tens of ms of CPU; let the other batches' SMTP sessions and
                    # commits run meanwhile instead of stalling them all.
                    await asyncio.sleep(0)
            results: list[SendResult] = unrendered
            step = max(1, self.provider.max_batch_size)
            on_commit = functools.partial(self._mark_sending, batch)
            early = _EarlyResults(self, campaign_id, pending, batch_id)
            try:
                for start in range(0, len(messages), step):
                    part = messages[start : start + step]
                    if self.limiter is not None:
                        await self.limiter.acquire(len(part))
                    results.extend(
                        await self.provider.send_batch(part, on_commit=on_commit, on_result=early.submit)
                    )
            except LeaseLost:
                # The new owner settles what this worker left SENDING as in doubt; recording it here too
                # would count it twice.
                log.warning("batch %s: taken over by another worker; stopping", batch_id)
                return True, None
            rest = [r for r in results if r.delivery_id not in early.recorded]
            campaign = early.campaign
            if rest or not early.recorded:
                late, campaign = await self._record(campaign_id, pending, rest, batch_id)
                early.add(late)
            tally = early.tally
            outcome.sent += tally.sent
            outcome.failed += tally.failed
            if tally.failed or tally.retry_ids:
                outcome.failures.add(results, pending, tally.retry_ids)
            if tally.retry_after is not None:
                retry_after = max(retry_after or 0.0, tally.retry_after)
            await self._report(campaign_id, campaign=campaign)

        return False, retry_after

    async def _run_claimed(self, batch: CampaignBatch) -> BatchOutcome:
        batch_id = batch.id
        outcome = BatchOutcome(claimed=True)
        campaign_id = batch.campaign_id
        async with self.db.transaction() as s:
            campaign = await s.get(Campaign, campaign_id)
            assert campaign is not None
            try:
                compiled = await self._content(s, campaign)
            except Exception as exc:  # a template that no longer renders must stop the campaign, visibly
                log.exception("campaign %s: content does not compile", campaign_id)
                compiled = None
                failure = f"The campaign content could not be compiled: {exc}"
            if compiled is not None:
                outcome.skipped = await self._materialise(s, batch)
                outcome.in_doubt = await self._settle_in_doubt(s, batch)
        if compiled is None:
            await self._fail_campaign(campaign_id, failure)
            await self._release(batch, done=False)
            await self._report(campaign_id, final=True)
            return outcome

        async with self._batch_connection(batch_id):
            stopped, retry_after = await self._send_chunks(batch, compiled, outcome)
        outcome.failures.log(log, batch_id, retry_after)
        if stopped:
            return outcome
        if retry_after is not None:
            # Transient failures left some recipients QUEUED: give the batch back and come again later.
            await self._release(batch, done=False)
            outcome.retry_after = retry_after
            return outcome
        await self._release(batch, done=True)
        outcome.done = True
        outcome.campaign_finished = await self._finish_if_complete(campaign_id)
        await self._report(campaign_id, final=outcome.campaign_finished)
        return outcome


class _EarlyResults:
    """Records results a provider reports as each request ends, so they do not stay SENDING until the chunk
    is done (a crash would leave them in doubt although their outcome was known); concurrent reports are
    recorded together, one group at a time."""

    def __init__(
        self, sender: CampaignSender, campaign_id: int, pending: dict[int, Pending], batch_id: int
    ) -> None:
        self._sender = sender
        self._campaign_id = campaign_id
        self._pending = pending
        self._batch_id = batch_id
        self._coalescer: Coalescer[SendResult] = Coalescer(self._flush)
        self.recorded: set[str] = set()
        self.tally = _Tally()
        self.campaign: Campaign | None = None

    async def submit(self, results: Sequence[SendResult]) -> None:
        await self._coalescer.submit(results)

    async def _flush(self, results: list[SendResult]) -> None:
        tally, self.campaign = await self._sender._record(
            self._campaign_id, self._pending, results, self._batch_id
        )
        self.recorded.update(r.delivery_id for r in results)
        self.add(tally)

    def add(self, tally: _Tally) -> None:
        self.tally.sent += tally.sent
        self.tally.failed += tally.failed
        self.tally.retry_ids.extend(tally.retry_ids)
        if tally.retry_after is not None:
            self.tally.retry_after = max(self.tally.retry_after or 0.0, tally.retry_after)


def _header_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:100]
