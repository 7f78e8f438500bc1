"""The deliveries ledger through SQLAlchemy: SQLite and PostgreSQL alike.

Each write is a statement or two in a transaction of its own, committed before the step it guards (a SENDING
mark before the provider's final go, a result before its slot is reused), so a worker killed at any point leaves
the ledger saying what happened, or that it cannot know.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Update, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignVariant,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.audience import targeting as audience
from emailkit.domain.audience import timezones
from emailkit.domain.sending import frequency_cap, lifecycle
from emailkit.domain.sending.ab.split import Split
from emailkit.domain.sending.ledger.protocol import (
    IN_DOUBT_NOTE,
    Admission,
    Failed,
    LeaseLost,
    Pending,
    Recorded,
    Sent,
)
from emailkit.domain.webhooks_out import emitters
from emailkit.metrics import record as metrics

# Rows a result may still be recorded on: not yet handed over (failed before it) or handed over by this run.
_UNSETTLED = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)

# (subscriber id, email, status, skip reason, the lists that make the recipient sendable as "3,8", variant,
# not before when)
Recipient = tuple[int, str, DeliveryStatus, str | None, str | None, int | None, datetime | None]
# Deliveries recorded sent, per A/B test variant (None: no test).
PerVariant = Mapping[int | None, int]


def record_sent_statement(workspace_id: int, now: datetime) -> Update:
    """SENDING → SENT for the delivery of each parameter set (b_id; b_pid, the provider's message id; b_att,
    the attempts), for an executemany: campaigns' and flows' sends record their results with it. A statement
    on the table, not the entity: the session's workspace filter does not reach it, so it is written out."""
    table = Delivery.__table__
    return (
        update(table)  # type: ignore[arg-type]
        .where(
            table.c.id == bindparam("b_id"),
            table.c.status == DeliveryStatus.SENDING,
            table.c.workspace_id == workspace_id,
        )
        .values(
            status=DeliveryStatus.SENT,
            provider_message_id=bindparam("b_pid"),
            attempts=bindparam("b_att"),
            sent_at=now,
            updated_at=now,
            last_error=None,
        )
    )


class PortableLedger:
    def __init__(self, db: Database, *, provider_name: str, lease_seconds: float) -> None:
        self.db = db
        self.provider_name = provider_name
        self.lease_seconds = lease_seconds
        self._counts_executemany = db.engine.dialect.supports_sane_multi_rowcount
        # Per running batch: the provider name and sender its SENDING marks record (see sending_via).
        self._via: dict[int, tuple[str, int | None]] = {}

    # -- the claim ----------------------------------------------------------------------------------------

    async def claim(self, batch_id: int) -> CampaignBatch | None:
        """Take a PENDING batch, or one whose worker's lease ran out (taken over): tried in that order, in one
        transaction, so the metrics can tell the two apart; the second statement runs only when the first
        took nothing (a redelivered message, a lost lease)."""
        now = utcnow()
        async with self.db.transaction() as s:
            for event, claimable in (
                ("claimed", CampaignBatch.status == BatchStatus.PENDING),
                (
                    "taken_over",
                    and_(CampaignBatch.status == BatchStatus.RUNNING, CampaignBatch.lease_until < now),
                ),
            ):
                stmt = (
                    update(CampaignBatch)
                    .where(
                        CampaignBatch.id == batch_id,
                        claimable,
                        lifecycle.is_running(CampaignBatch.campaign_id),
                    )
                    .values(
                        status=BatchStatus.RUNNING,
                        lease_until=now + timedelta(seconds=self.lease_seconds),
                        attempts=CampaignBatch.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if (await s.execute(stmt)).rowcount == 1:  # type: ignore[attr-defined]
                    metrics.batch(event)
                    return await s.get(CampaignBatch, batch_id)
            return None

    def _lease_stmt(self, batch: CampaignBatch) -> Update:
        # Only this claim's lease: a worker presumed dead (cut off, paused) that comes back must not extend
        # the lease of the run that took its batch over (nor put one on a batch that run has finished).
        return (
            update(CampaignBatch)
            .where(
                CampaignBatch.id == batch.id,
                CampaignBatch.status == BatchStatus.RUNNING,
                CampaignBatch.attempts == batch.attempts,
            )
            .values(lease_until=utcnow() + timedelta(seconds=self.lease_seconds))
            .execution_options(synchronize_session=False)
        )

    async def extend_lease(self, batch: CampaignBatch) -> bool:
        async with self.db.transaction() as s:
            return bool((await s.execute(self._lease_stmt(batch))).rowcount)  # type: ignore[attr-defined]

    async def release(self, batch: CampaignBatch, *, done: bool) -> None:
        async with self.db.transaction() as s:
            result = await s.execute(
                update(CampaignBatch)
                .where(
                    CampaignBatch.id == batch.id,
                    CampaignBatch.status == BatchStatus.RUNNING,
                    CampaignBatch.attempts == batch.attempts,
                )
                .values(status=BatchStatus.DONE if done else BatchStatus.PENDING, lease_until=None)
            )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            metrics.batch("done" if done else "released")

    # -- before sending -----------------------------------------------------------------------------------

    async def materialise(
        self,
        session: AsyncSession,
        batch: CampaignBatch,
        split: Split | None = None,
        admission: Admission | None = None,
    ) -> int:
        target = await audience.load_target(session, batch.campaign_id)
        now = utcnow()
        recipients: list[Recipient] = []
        for sid, email, status, sendable, unconfirmed, via in await session.execute(
            audience.recipients_stmt(target, batch.lo_id, batch.hi_id)
        ):
            variant = split.variant_of(sid) if split is not None else None
            if split is not None and variant is None:
                continue  # outside the A/B test's share: materialised with the winner, once it is chosen
            reason = audience.skip_reason(status, int(sendable or 0), int(unconfirmed or 0))
            # The lists that make a QUEUED recipient sendable: what an unsubscribe from this delivery leaves.
            recipients.append(
                (sid, email, DeliveryStatus.SKIPPED, reason, None, variant, None)
                if reason
                else (sid, email, DeliveryStatus.QUEUED, None, via, variant, None)
            )
        if not recipients:
            return 0
        if admission is not None:
            recipients = await _admit(session, recipients, admission)
        statuses = await self._insert(session, batch, recipients, now)
        skipped = sum(1 for st in statuses if st == DeliveryStatus.SKIPPED)
        if skipped:
            await self._bump(session, batch.campaign_id, skipped=skipped)
        return skipped

    async def _insert(
        self, session: AsyncSession, batch: CampaignBatch, recipients: list[Recipient], now: datetime
    ) -> list[DeliveryStatus]:
        """Insert the rows not there yet, in the batch's workspace; returns the statuses of those inserted."""
        local = any(r[6] is not None for r in recipients)
        table = Delivery.__table__
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(table)  # type: ignore[arg-type]
            .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
            .returning(table.c.status)
        )
        rows = [
            {
                # The campaign's workspace, from the batch row in hand: named, not left to the scope's default.
                "workspace_id": batch.workspace_id,
                "campaign_id": batch.campaign_id,
                "subscriber_id": sid,
                "email": email,
                "status": status,
                "skip_reason": reason,
                "via_list_ids": None if via is None else audience.parse_id_list(via),
                "variant_id": variant,
                "created_at": now,
                "updated_at": now,
                # Only a local-time campaign's rows name it: the usual statement stays as it was.
                **({"not_before": not_before} if local else {}),
            }
            for sid, email, status, reason, via, variant, not_before in recipients
        ]
        # One executemany: compiled once (cached) and sent as multi-row pages, where a .values(rows)
        # statement per page would be compiled afresh every time (≈18% of a worker's CPU when measured).
        return list((await session.execute(stmt, rows)).scalars())

    async def settle_in_doubt(self, session: AsyncSession, batch: CampaignBatch) -> int:
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
        n = int((await session.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
        if n:
            await self._bump(session, batch.campaign_id, in_doubt=n)
        return n

    # -- while sending ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lend_connection(self, batch: CampaignBatch) -> AsyncIterator[None]:
        # Each statement takes a pooled connection of its own.
        yield

    async def next_chunk(
        self, batch: CampaignBatch, after_id: int, limit: int, due_by: datetime | None = None
    ) -> tuple[Campaign | None, list[Pending]]:
        # One transaction per chunk instead of three.
        stmt = (
            select(
                Delivery.id,
                Delivery.subscriber_id,
                Delivery.email,
                Delivery.attempts,
                Subscriber.name,
                Subscriber.attributes,
                Delivery.variant_id,
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
        if due_by is not None:
            stmt = stmt.where(or_(Delivery.not_before.is_(None), Delivery.not_before <= due_by))
        async with self.db.transaction() as s:
            await s.execute(self._lease_stmt(batch))
            campaign = await s.get(Campaign, batch.campaign_id, populate_existing=True)
            chunk = [
                Pending(did, sid, email, name or "", dict(attrs or {}), attempts, variant)
                for did, sid, email, attempts, name, attrs, variant in await s.execute(stmt)
            ]
        return campaign, chunk

    async def next_due(self, batch: CampaignBatch, after: datetime) -> datetime | None:
        stmt = select(func.min(Delivery.not_before)).where(
            Delivery.campaign_id == batch.campaign_id,
            Delivery.subscriber_id.between(batch.lo_id, batch.hi_id),
            Delivery.status == DeliveryStatus.QUEUED,
            Delivery.not_before > after,
        )
        async with self.db.session() as s:
            return (await s.execute(stmt)).scalar_one_or_none()

    @contextlib.contextmanager
    def sending_via(self, batch: CampaignBatch, provider_name: str, sender_id: int | None) -> Iterator[None]:
        self._via[batch.id] = (provider_name, sender_id)
        try:
            yield
        finally:
            self._via.pop(batch.id, None)

    def _route_of(self, batch: CampaignBatch) -> tuple[str, int | None]:
        return self._via.get(batch.id, (self.provider_name, None))

    async def mark_sending(self, batch: CampaignBatch, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        provider, sender_id = self._route_of(batch)
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
                .values(status=DeliveryStatus.SENDING, provider=provider, sender_id=sender_id)
                .execution_options(synchronize_session=False)
            )

    async def record(
        self, batch: CampaignBatch, sent: Sequence[Sent], failed: Sequence[Failed], *, with_campaign: bool
    ) -> Recorded:
        now = utcnow()
        recorded = Recorded()
        async with self.db.transaction() as s:
            for f in failed:
                # Failures are rare: one statement each keeps the code plain. A row a takeover has made
                # IN_DOUBT meanwhile stays so (and so does one recorded sent below).
                changed = await s.execute(
                    update(Delivery)
                    .where(Delivery.id == f.delivery_id, Delivery.status.in_(_UNSETTLED))
                    .values(status=f.status, attempts=f.attempts, last_error=f.error, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount:  # type: ignore[attr-defined]
                    recorded.failures.append(f)
            per_variant: PerVariant = {}
            if sent:
                per_variant = await self._record_sent(s, batch.workspace_id, sent, now)
                recorded.sent = sum(per_variant.values())
            if recorded.sent or recorded.failed:
                # The campaign's row first, as every recording does: it serialises their variant updates.
                await self._bump(s, batch.campaign_id, sent=recorded.sent, failed=recorded.failed)
                await self._bump_variants(s, batch.workspace_id, per_variant)
            # Outgoing webhooks, in the same transaction (no statement when no endpoint listens).
            await emitters.deliveries_settled(
                s,
                batch.workspace_id,
                sent=[(r.delivery_id, r.provider_message_id) for r in sent],
                failed=[
                    (f.delivery_id, f.error) for f in recorded.failures if f.status is DeliveryStatus.FAILED
                ],
            )
            if with_campaign:
                recorded.campaign = await s.get(Campaign, batch.campaign_id, populate_existing=True)
        return recorded

    async def _record_sent(
        self, session: AsyncSession, workspace_id: int, sent: Sequence[Sent], now: datetime
    ) -> PerVariant:
        """Mark SENDING rows SENT; returns how many were, per variant (a row a takeover settled meanwhile is
        not). One statement per variant: its row count is what that variant's counter gains."""
        groups: dict[int | None, list[Sent]] = defaultdict(list)
        for r in sent:
            groups[r.variant_id].append(r)
        return {
            variant: await self._record_sent_rows(session, workspace_id, rows, now)
            for variant, rows in sorted(groups.items(), key=lambda item: item[0] or 0)
        }

    async def _record_sent_rows(
        self, session: AsyncSession, workspace_id: int, sent: Sequence[Sent], now: datetime
    ) -> int:
        stmt = record_sent_statement(workspace_id, now)
        rows = [{"b_id": r.delivery_id, "b_pid": r.provider_message_id, "b_att": r.attempts} for r in sent]
        if self._counts_executemany:
            return int((await session.execute(stmt, rows)).rowcount or 0)  # type: ignore[attr-defined]
        # A driver that cannot say how many rows an executemany changed (asyncpg) gets one statement per row:
        # slow, but the counter must not count a row a takeover has settled.
        changed = 0
        for row in rows:
            changed += int((await session.execute(stmt, row)).rowcount or 0)  # type: ignore[attr-defined]
        return changed

    @staticmethod
    async def _bump_variants(session: AsyncSession, workspace_id: int, per_variant: PerVariant) -> None:
        """Add to the sent counters of A/B test variants (a few rows at most), in the batch's workspace."""
        counts = sorted((vid, n) for vid, n in per_variant.items() if vid is not None and n)
        if not counts:
            return
        table = CampaignVariant.__table__
        # A statement on the table, not the entity: the session's workspace filter does not reach it.
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("b_id"), table.c.workspace_id == workspace_id)
            .values(sent_count=table.c.sent_count + bindparam("b_n"))
        )
        await session.execute(stmt, [{"b_id": vid, "b_n": n} for vid, n in counts])

    @staticmethod
    async def _bump(
        session: AsyncSession,
        campaign_id: int,
        *,
        sent: int = 0,
        failed: int = 0,
        skipped: int = 0,
        in_doubt: int = 0,
    ) -> None:
        await session.execute(
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


async def _admit(session: AsyncSession, recipients: list[Recipient], admission: Admission) -> list[Recipient]:
    """The recipients as the admission rules leave them: a QUEUED one over the frequency cap is SKIPPED
    (``frequency_cap``), and a local-time campaign's QUEUED ones are held until they are due."""
    queued = [r[0] for r in recipients if r[2] is DeliveryStatus.QUEUED]
    capped: set[int] = set()
    if admission.cap is not None and queued:
        capped = await frequency_cap.capped(session, admission.cap, queued, admission.now)
    zones: dict[int, str | None] = {}
    if admission.local is not None and queued:
        zones = await timezones.attribute_values(session, queued)
    out: list[Recipient] = []
    for sid, email, status, reason, via, variant, _ in recipients:
        if status is not DeliveryStatus.QUEUED:
            out.append((sid, email, status, reason, via, variant, None))
        elif sid in capped:
            out.append(
                (sid, email, DeliveryStatus.SKIPPED, frequency_cap.SKIP_FREQUENCY_CAP, None, variant, None)
            )
        elif admission.local is not None:
            due = admission.local.due_at(zones.get(sid), audience.parse_id_list(via))
            out.append((sid, email, status, None, via, variant, due))
        else:
            out.append((sid, email, status, None, via, variant, None))
    return out
