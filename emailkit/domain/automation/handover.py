"""The two writes around a flow SEND's hand-over, on the hot path of every flow send.

``mark``: QUEUED → SENDING, committed, only while the claim is held; the provider asks for it right before
each message's (or request's) final go. ``sent``: SENDING → SENT with the provider's message id, committed as
each group of results comes back, so a crash leaves in doubt only what was in flight. (The ledger rows, the
runs' moves and the counters follow once the group is handed over, in ``send_step``: a run whose delivery is
SENT and whose step is not settled is settled as sent when it is taken again.)

Through a session each is several round trips (BEGIN, the statements, COMMIT) on a pool checkout that pings the
server first: on PostgreSQL a send step borrows one connection for its whole hand-over and sends each as one
statement committed on its own, as a campaign batch does (``sending.ledger.postgres``). SQLite keeps the
portable transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import BigInteger, update

from emailkit.db.dialect import one_of
from emailkit.db.engine import Database
from emailkit.db.tables.automation import FlowClaim
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.automation.runs import Held, LeaseLost
from emailkit.domain.sending.ledger import record_sent_statement
from emailkit.domain.sending.ledger.postgres import driver_connection

# The claim's row is locked (FOR KEY SHARE, which a lease renewal does not wait for): a takeover deletes it
# once its lease has run out, so the delete waits until this commit and whoever takes the runs next sees these
# deliveries SENDING; a hand-over after the delete finds no row and marks nothing. The claim's runs are not
# read: only this worker wrote these deliveries, for runs it held under the claim, and they leave the claim only
# by its own writes or by that takeover. (Data-modifying CTEs run regardless of the outer query, hence the
# count in the update's condition.)
_MARK_SENDING = """
    WITH held AS (
        SELECT id FROM flow_claims WHERE id = $2 AND workspace_id = $3 FOR KEY SHARE
    ), marked AS (
        UPDATE deliveries AS d SET status = $4, provider = $5, updated_at = $6
        FROM unnest($1::bigint[]) AS v(id)
        WHERE d.id = v.id AND d.status = ANY($7::text[]) AND d.workspace_id = $3
            AND (SELECT count(*) FROM held) = 1
    )
    SELECT count(*) FROM held
"""


_RECORD_SENT = """
    UPDATE deliveries AS d
    SET status = $1, provider_message_id = v.pid, attempts = v.att, sent_at = $5, updated_at = $5,
        last_error = NULL
    FROM unnest($2::bigint[], $3::text[], $4::int[]) AS v(id, pid, att)
    WHERE d.id = v.id AND d.status = $6 AND d.workspace_id = $7
"""


@dataclass(frozen=True)
class Sent:
    delivery_id: int
    provider_message_id: str | None
    attempts: int


class Handover(Protocol):
    async def mark(self, ids: list[str]) -> None: ...

    async def sent(self, rows: Sequence[Sent], now: datetime) -> None: ...


def _lost(held: Held) -> LeaseLost:
    return LeaseLost(f"flow runs of claim {held.claim} were taken over; not sending")


@contextlib.asynccontextmanager
async def lend(db: Database, held: Held, provider_name: str) -> AsyncIterator[Handover]:
    """The hand-over writes of one send step (on PostgreSQL, on a connection lent to it)."""
    if db.engine.dialect.name != "postgresql":
        yield _Portable(db, held, provider_name)
        return
    async with db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        driver = await driver_connection(conn)
        # Planned at each call, with the ids in hand and the table's size of the moment. A generic plan is made
        # once, after five calls, and kept: made while a flow's first deliveries were the table's only rows (no
        # ANALYZE since, as with autovacuum off), it read the whole deliveries table at every call later on.
        await driver.execute("SET plan_cache_mode = force_custom_plan")
        try:
            yield _Lent(driver, held, provider_name)
        finally:
            with contextlib.suppress(Exception):
                await driver.execute("RESET plan_cache_mode")


class _Lent:
    def __init__(self, driver: Any, held: Held, provider_name: str) -> None:
        self._driver = driver
        self._held = held
        self._provider_name = provider_name
        # The provider's sessions hand over concurrently; one statement at a time on the connection.
        self._lock = asyncio.Lock()

    async def mark(self, ids: list[str]) -> None:
        wanted = sorted({int(d) for d in ids})
        async with self._lock:
            count = await self._driver.fetchval(
                _MARK_SENDING,
                wanted,
                self._held.claim,
                self._held.workspace_id,
                DeliveryStatus.SENDING.value,
                self._provider_name,
                utcnow(),
                [DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value],
            )
        if count != 1:
            raise _lost(self._held)

    async def sent(self, rows: Sequence[Sent], now: datetime) -> None:
        async with self._lock:
            await self._driver.execute(
                _RECORD_SENT,
                DeliveryStatus.SENT.value,
                [r.delivery_id for r in rows],
                [r.provider_message_id for r in rows],
                [r.attempts for r in rows],
                now,
                DeliveryStatus.SENDING.value,
                self._held.workspace_id,
            )


class _Portable:
    def __init__(self, db: Database, held: Held, provider_name: str) -> None:
        self._db = db
        self._held = held
        self._provider_name = provider_name

    async def mark(self, delivery_ids: list[str]) -> None:
        """An id passed again (its hand-over retried on a new connection) is SENDING already, by this worker."""
        ids = sorted({int(d) for d in delivery_ids})
        async with self._db.transaction() as s:
            if await s.get(FlowClaim, self._held.claim) is None:
                raise _lost(self._held)
            marking: Any = (
                update(Delivery)
                .where(
                    one_of(s, Delivery.id, ids, BigInteger()),
                    Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
                )
                .values(status=DeliveryStatus.SENDING, provider=self._provider_name, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            await s.execute(marking)

    async def sent(self, rows: Sequence[Sent], now: datetime) -> None:
        params = [{"b_id": r.delivery_id, "b_pid": r.provider_message_id, "b_att": r.attempts} for r in rows]
        async with self._db.transaction() as s:
            await s.execute(record_sent_statement(self._held.workspace_id, now), params)
