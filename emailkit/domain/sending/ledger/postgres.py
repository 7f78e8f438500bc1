"""The deliveries ledger on PostgreSQL: the hot statements as single array-parameter statements, and a
running batch's per-chunk statements straight through asyncpg on one connection it holds.

A batch runs a handful of statements per chunk of 200 and one per few messages (the SENDING commit). Through
SQLAlchemy's ORM each costs more worker CPU than the server spends on it (statement caching, result
processing, and a pre-ping on every pool checkout), so while a batch runs it keeps one connection and sends
these as plain parameterised statements, each committed on its own. Their semantics are those of the
portable ledger's statements they replace; the rest (claim, lease, release, settling) is the portable one's.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, Text, bindparam, cast, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign, CampaignBatch, Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.sending.ledger.connection import BatchConnection
from emailkit.domain.sending.ledger.portable import PerVariant, PortableLedger, Recipient
from emailkit.domain.sending.ledger.protocol import Failed, LeaseLost, Pending, Recorded, Sent
from emailkit.domain.webhooks_out import emit


def _unnest(*arrays: tuple[str, Any], name: str = "v") -> Any:
    """``unnest(CAST(:a AS t[]), ...) AS v(a, ...)``: a batch of rows as a few array parameters."""
    return (
        func.unnest(*(cast(bindparam(key), postgresql.ARRAY(type_)) for key, type_ in arrays))
        .table_valued(*(key for key, _ in arrays))
        .render_derived(name)
    )


def _materialise_stmt(*, local: bool) -> Any:
    # A batch's ledger rows as one statement with array parameters (no per-row bind processing, one
    # execution on the server); Python-side column defaults are added by from_select. A local-time
    # campaign's rows also say when each is due; the usual statement is left as it was.
    table = Delivery.__table__
    arrays: list[tuple[str, Any]] = [
        ("sids", BigInteger),
        ("emails", Text),
        ("statuses", Text),
        ("reasons", Text),
        ("vias", Text),
        ("variants", BigInteger),
    ]
    if local:
        arrays.append(("due", postgresql.TIMESTAMP(timezone=True)))
    rows = _unnest(*arrays)
    now = bindparam("now", type_=table.c.created_at.type)
    columns = [
        "workspace_id",
        "campaign_id",
        "subscriber_id",
        "email",
        "status",
        "skip_reason",
        "via_list_ids",
        "variant_id",
        "created_at",
        "updated_at",
    ]
    values = [
        bindparam("workspace_id", type_=BigInteger),
        bindparam("campaign_id", type_=BigInteger),
        rows.c.sids,
        rows.c.emails,
        rows.c.statuses,
        rows.c.reasons,
        cast(rows.c.vias, postgresql.JSONB),
        rows.c.variants,
        now,
        now,
    ]
    if local:
        columns.append("not_before")
        values.append(rows.c.due)
    source = select(*values)
    return (
        postgresql.insert(table)  # type: ignore[arg-type]
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
        .returning(table.c.status)
    )


def _record_sent_stmt() -> Any:
    # One UPDATE joined to the arrays, where executemany runs one statement per row on the server.
    table = Delivery.__table__
    rows = _unnest(("ids", BigInteger), ("pids", Text), ("atts", Integer))
    now = bindparam("now", type_=table.c.sent_at.type)
    return (
        update(table)  # type: ignore[arg-type]
        .where(
            table.c.id == rows.c.ids,
            table.c.status == DeliveryStatus.SENDING,
            table.c.workspace_id == bindparam("ws", type_=BigInteger),
        )
        .values(
            status=DeliveryStatus.SENT,
            provider_message_id=rows.c.pids,
            attempts=rows.c.atts,
            sent_at=now,
            updated_at=now,
            last_error=None,
        )
        .returning(table.c.variant_id)
    )


_MATERIALISE = _materialise_stmt(local=False)
_MATERIALISE_LOCAL = _materialise_stmt(local=True)
_RECORD_SENT = _record_sent_stmt()


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one (in autocommit mode, so no transaction is open)."""
    return (await conn.get_raw_connection()).driver_connection


class PostgresLedger(PortableLedger):
    def __init__(self, db: Database, *, provider_name: str, lease_seconds: float) -> None:
        super().__init__(db, provider_name=provider_name, lease_seconds=lease_seconds)
        # Single statements committed on their own (no BEGIN/COMMIT round trips); same pool as `db`.
        self._autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lent: dict[int, BatchConnection] = {}

    async def _insert(
        self, session: AsyncSession, batch: CampaignBatch, recipients: list[Recipient], now: datetime
    ) -> list[DeliveryStatus]:
        sids, emails, statuses, reasons, vias, variants, due = zip(*recipients, strict=True)
        local = any(d is not None for d in due)
        params: dict[str, Any] = {
            "workspace_id": batch.workspace_id,
            "campaign_id": batch.campaign_id,
            "sids": list(sids),
            "emails": list(emails),
            "statuses": [st.value for st in statuses],
            "reasons": list(reasons),
            # "3,8" (ordered by the database) is the JSON array [3,8] without its brackets.
            "vias": [None if v is None else f"[{v}]" for v in vias],
            "variants": list(variants),
            "now": now,
        }
        if local:
            params["due"] = list(due)
        stmt = _MATERIALISE_LOCAL if local else _MATERIALISE
        return list((await session.execute(stmt, params)).scalars())

    @contextlib.asynccontextmanager
    async def lend_connection(self, batch: CampaignBatch) -> AsyncIterator[None]:
        """Lend a running batch one connection for its per-chunk statements and commit hooks.

        Every pool checkout pings the server (SQLAlchemy's asyncpg ping is BEGIN, a query and ROLLBACK):
        three round trips that, per hook call, cost more than the hook's own statement.
        """
        async with self._autocommit.connect() as conn:
            self._lent[batch.id] = BatchConnection(await driver_connection(conn), batch.workspace_id)
            try:
                yield
            finally:
                del self._lent[batch.id]

    async def next_chunk(
        self, batch: CampaignBatch, after_id: int, limit: int, due_by: datetime | None = None
    ) -> tuple[Campaign | None, list[Pending]]:
        lent = self._lent.get(batch.id)
        if lent is None:
            return await super().next_chunk(batch, after_id, limit, due_by)
        return await lent.next_chunk(
            campaign_id=batch.campaign_id,
            batch_id=batch.id,
            claim=batch.attempts,
            lease_until=utcnow() + timedelta(seconds=self.lease_seconds),
            lo_id=batch.lo_id,
            hi_id=batch.hi_id,
            after_id=after_id,
            limit=limit,
            due_by=due_by,
        )

    async def mark_sending(self, batch: CampaignBatch, delivery_ids: Sequence[str]) -> None:
        # The same check, lock and update as the portable transaction, as one statement committed on its own:
        # one round trip instead of four (BEGIN, SELECT ... FOR SHARE, UPDATE, COMMIT). The smtp provider
        # calls this for every few messages, so it is on the hot path of a send.
        if not delivery_ids:
            return
        ids = [int(d) for d in delivery_ids]
        provider, sender_id = self._route_of(batch)
        lent = self._lent.get(batch.id)
        if lent is not None:
            held = await lent.mark_sending(batch.id, batch.attempts, provider, ids, sender_id)
        else:
            async with self._autocommit.connect() as conn:
                once = BatchConnection(await driver_connection(conn), batch.workspace_id)
                held = await once.mark_sending(batch.id, batch.attempts, provider, ids, sender_id)
        if not held:
            raise LeaseLost(f"batch {batch.id} was taken over by another worker")

    async def record(
        self, batch: CampaignBatch, sent: Sequence[Sent], failed: Sequence[Failed], *, with_campaign: bool
    ) -> Recorded:
        lent = self._lent.get(batch.id)
        # The lent connection's one statement cannot also write webhook messages: when an endpoint of the
        # workspace takes delivery.sent, the portable path records (and emits) in one transaction.
        if (
            lent is None
            or not sent
            or failed
            or await emit.wanted_in(self.db, batch.workspace_id, "delivery.sent")
        ):
            return await super().record(batch, sent, failed, with_campaign=with_campaign)
        # The usual chunk: everyone sent. One statement records them, bumps the counters (the campaign's and
        # its A/B test variants') and returns the campaign.
        campaign, count = await lent.record_sent(
            campaign_id=batch.campaign_id,
            ids=[r.delivery_id for r in sent],
            provider_ids=[r.provider_message_id for r in sent],
            attempts=[r.attempts for r in sent],
            now=utcnow(),
        )
        return Recorded(sent=count, campaign=campaign)

    async def _record_sent(
        self, session: AsyncSession, workspace_id: int, sent: Sequence[Sent], now: datetime
    ) -> PerVariant:
        params = {
            "ws": workspace_id,
            "ids": [r.delivery_id for r in sent],
            "pids": [r.provider_message_id for r in sent],
            "atts": [r.attempts for r in sent],
            "now": now,
        }
        return Counter((await session.execute(_RECORD_SENT, params)).scalars())
