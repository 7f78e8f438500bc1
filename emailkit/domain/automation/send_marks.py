"""The SENDING mark of a flow SEND's hand-over: QUEUED → SENDING, committed, only while the claim is held.

The provider asks for it right before each message's (or request's) final go, so it is on the hot path of
every flow send. Through a session it is four round trips (BEGIN, the claim check FOR SHARE, the UPDATE,
COMMIT) on a pool checkout that pings the server first: on PostgreSQL a send step borrows one connection for
its whole hand-over and marks with one statement committed on its own, as a campaign batch does
(``sending.ledger.postgres``). SQLite keeps the portable transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import BigInteger, select, update

from emailkit.db.dialect import one_of
from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowRun
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.automation.runs import Held, LeaseLost
from emailkit.domain.sending.ledger.postgres import driver_connection

Mark = Callable[[list[str]], Awaitable[None]]

# The runs are locked FOR SHARE, so a takeover by the ticker (FOR UPDATE SKIP LOCKED) passes them by until this
# commit and whoever takes them next sees these deliveries SENDING. The update runs only when every delivery's
# run is still under the claim; the outer query says how many were (data-modifying CTEs run regardless).
_MARK_SENDING = """
    WITH held AS (
        SELECT r.id FROM flow_runs AS r JOIN deliveries AS d ON d.flow_run_id = r.id
        WHERE d.id = ANY($1::bigint[]) AND d.workspace_id = $3 AND r.claim = $2 AND r.workspace_id = $3
        FOR SHARE OF r
    ), marked AS (
        UPDATE deliveries SET status = $4, provider = $5, updated_at = $6
        WHERE id = ANY($1::bigint[]) AND status = ANY($7::text[]) AND workspace_id = $3
            AND (SELECT count(*) FROM held) = cardinality($1::bigint[])
    )
    SELECT count(*) FROM held
"""


def _lost(held: Held) -> LeaseLost:
    return LeaseLost(f"flow runs of claim {held.claim} were taken over; not sending")


@contextlib.asynccontextmanager
async def lend(db: Database, held: Held, provider_name: str) -> AsyncIterator[Mark]:
    """The mark function for one send step's hand-over (on PostgreSQL, on a connection lent to it)."""
    if db.engine.dialect.name != "postgresql":
        yield lambda ids: _mark_portable(db, held, provider_name, ids)
        return
    async with db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        driver = await driver_connection(conn)
        # The provider's sessions hand over concurrently; one statement at a time on the connection.
        lock = asyncio.Lock()

        async def mark(ids: list[str]) -> None:
            wanted = sorted({int(d) for d in ids})
            async with lock:
                count = await driver.fetchval(
                    _MARK_SENDING,
                    wanted,
                    held.claim,
                    held.workspace_id,
                    DeliveryStatus.SENDING.value,
                    provider_name,
                    utcnow(),
                    [DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value],
                )
            if count != len(wanted):
                raise _lost(held)

        yield mark


async def _mark_portable(db: Database, held: Held, provider_name: str, delivery_ids: Sequence[str]) -> None:
    """The same as one transaction. An id passed again (its hand-over retried on a new connection) is SENDING
    already, by this worker."""
    ids = sorted({int(d) for d in delivery_ids})
    async with db.transaction() as s:
        theirs = select(Delivery.flow_run_id).where(one_of(s, Delivery.id, ids, BigInteger()))
        found = (
            await s.execute(select(FlowRun.id).where(FlowRun.id.in_(theirs), FlowRun.claim == held.claim))
        ).all()
        if len(found) != len(ids):
            raise _lost(held)
        stmt: Any = (
            update(Delivery)
            .where(
                one_of(s, Delivery.id, ids, BigInteger()),
                Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
            )
            .values(status=DeliveryStatus.SENDING, provider=provider_name, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await s.execute(stmt)
