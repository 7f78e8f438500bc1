"""One asyncpg connection lent to a running batch, and the statements the batch sends on it.

Semantics are those of the portable ledger's statements they replace; each is committed on its own. Raw
statements are not filtered by the session's workspace scope, so each names the batch's workspace itself (the
row-level security policies would hide other workspaces' rows anyway; this keeps the statements right on
their own).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from emailkit.db.tables.sending import BatchStatus, Campaign, CampaignStatus, DeliveryStatus
from emailkit.domain.sending.ledger.protocol import Pending

# Data-modifying CTEs run to completion whether or not the outer query reads them; the outer query says
# whether the lease was still held (when it was not, the update matched nothing). The shared lock makes a
# takeover wait for this commit, so the new owner's settling sees these rows. The ids drive the update as a
# joined array, which only the primary key can serve: with `id = ANY($6)` a generic plan may read deliveries
# through (campaign_id, status, id) whole, as the flow send's twin of this statement once did at 100k.
_MARK_SENDING = """
    WITH held AS (
        SELECT id FROM campaign_batches
        WHERE id = $1 AND status = $2 AND attempts = $3 AND workspace_id = $8
        FOR SHARE
    ), marked AS (
        UPDATE deliveries AS d SET status = $4, provider = $5, sender_id = $9
        FROM unnest($6::bigint[]) AS v(id)
        WHERE d.id = v.id AND d.status = $7 AND d.workspace_id = $8 AND EXISTS (SELECT 1 FROM held)
    )
    SELECT count(*) FROM held
"""

# The lease is renewed on a timer too; doing it here as well costs nothing. Only this claim's ($5: its claim
# number): a worker presumed dead that comes back must not renew the lease of the run that took over.
_STATE_AND_LEASE = """
    WITH lease AS (
        UPDATE campaign_batches SET lease_until = $2
        WHERE id = $1 AND workspace_id = $4 AND status = $6 AND attempts = $5
    )
    SELECT id, status, status_reason, recipients_count, sent_count, failed_count, skipped_count,
        in_doubt_count
    FROM campaigns WHERE id = $3 AND workspace_id = $4
"""

_CHUNK = """
    SELECT d.id, d.subscriber_id, d.email, d.attempts, s.name, s.attributes, d.variant_id
    FROM deliveries AS d JOIN subscribers AS s ON s.id = d.subscriber_id AND s.workspace_id = $7
    WHERE d.campaign_id = $1 AND d.subscriber_id BETWEEN $2 AND $3 AND d.status = $4 AND d.id > $5
        AND d.workspace_id = $7
    ORDER BY d.id
    LIMIT $6
"""

# The same for a local-time campaign: only the deliveries due by $8 (a statement of its own, so the usual
# one keeps its plan and its cost).
_CHUNK_DUE = """
    SELECT d.id, d.subscriber_id, d.email, d.attempts, s.name, s.attributes, d.variant_id
    FROM deliveries AS d JOIN subscribers AS s ON s.id = d.subscriber_id AND s.workspace_id = $7
    WHERE d.campaign_id = $1 AND d.subscriber_id BETWEEN $2 AND $3 AND d.status = $4 AND d.id > $5
        AND d.workspace_id = $7 AND (d.not_before IS NULL OR d.not_before <= $8)
    ORDER BY d.id
    LIMIT $6
"""

# Only rows still SENDING: a takeover that found this worker presumed dead has made them IN_DOUBT meanwhile,
# and counting them as sent too would count them twice. The A/B test variants' counters are updated after the
# campaign's row is (their join needs its row), so concurrent recordings, serialised on that row, never lock
# two variants in opposite orders.
_RECORD_SENT = """
    WITH sent AS (
        UPDATE deliveries AS d
        SET status = $1, provider_message_id = v.pid, attempts = v.att, sent_at = $5, updated_at = $5,
            last_error = NULL
        FROM unnest($2::bigint[], $3::text[], $4::int[]) AS v(id, pid, att)
        WHERE d.id = v.id AND d.status = $6 AND d.workspace_id = $8
        RETURNING d.variant_id
    ), campaign AS (
        UPDATE campaigns SET sent_count = sent_count + (SELECT count(*) FROM sent), updated_at = $5
        WHERE id = $7 AND workspace_id = $8
        RETURNING id, status, status_reason, recipients_count, sent_count, failed_count, skipped_count,
            in_doubt_count, (SELECT count(*) FROM sent) AS recorded
    ), variants AS (
        UPDATE campaign_variants AS cv SET sent_count = cv.sent_count + n.sent
        FROM campaign,
            (SELECT variant_id, count(*) AS sent FROM sent WHERE variant_id IS NOT NULL GROUP BY variant_id) AS n
        WHERE cv.id = n.variant_id AND cv.workspace_id = $8
    )
    SELECT * FROM campaign
"""


def _campaign(row: Any, workspace_id: int) -> Campaign | None:
    """A detached Campaign holding the counters the pipeline and the progress report read."""
    if row is None:
        return None
    return Campaign(
        id=row["id"],
        workspace_id=workspace_id,
        status=CampaignStatus(row["status"]),
        status_reason=row["status_reason"],
        recipients_count=row["recipients_count"],
        sent_count=row["sent_count"],
        failed_count=row["failed_count"],
        skipped_count=row["skipped_count"],
        in_doubt_count=row["in_doubt_count"],
    )


def _attributes(value: Any) -> dict[str, Any]:
    # SQLAlchemy's asyncpg codecs hand JSON over as text.
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


class BatchConnection:
    """One asyncpg connection lent to a running batch of `workspace_id`; calls are serialised (the batch's
    SMTP sessions commit concurrently)."""

    def __init__(self, driver: Any, workspace_id: int) -> None:
        self._driver = driver
        self._workspace_id = workspace_id
        self._lock = asyncio.Lock()

    async def mark_sending(
        self, batch_id: int, attempts: int, provider: str, ids: list[int], sender_id: int | None = None
    ) -> bool:
        """Mark QUEUED deliveries SENDING (through `provider` and `sender_id`) if the batch is still this
        claim's; False when it is not."""
        async with self._lock:
            held = await self._driver.fetchval(
                _MARK_SENDING,
                batch_id,
                BatchStatus.RUNNING.value,
                attempts,
                DeliveryStatus.SENDING.value,
                provider,
                ids,
                DeliveryStatus.QUEUED.value,
                self._workspace_id,
                sender_id,
            )
        return bool(held)

    async def next_chunk(
        self,
        *,
        campaign_id: int,
        batch_id: int,
        claim: int,
        lease_until: datetime,
        lo_id: int,
        hi_id: int,
        after_id: int,
        limit: int,
        due_by: datetime | None = None,
    ) -> tuple[Campaign | None, list[Pending]]:
        params = [campaign_id, lo_id, hi_id, DeliveryStatus.QUEUED.value, after_id, limit, self._workspace_id]
        async with self._lock:
            state = await self._driver.fetchrow(
                _STATE_AND_LEASE,
                batch_id,
                lease_until,
                campaign_id,
                self._workspace_id,
                claim,
                BatchStatus.RUNNING.value,
            )
            if due_by is None:
                rows = await self._driver.fetch(_CHUNK, *params)
            else:
                rows = await self._driver.fetch(_CHUNK_DUE, *params, due_by)
        chunk = [Pending(r[0], r[1], r[2], r[4] or "", _attributes(r[5]), r[3], r[6]) for r in rows]
        return _campaign(state, self._workspace_id), chunk

    async def record_sent(
        self,
        *,
        campaign_id: int,
        ids: list[int],
        provider_ids: list[str | None],
        attempts: list[int],
        now: datetime,
    ) -> tuple[Campaign | None, int]:
        """Mark SENDING deliveries SENT and add them to the campaign's counter in one statement; returns the
        campaign and how many were recorded."""
        async with self._lock:
            row = await self._driver.fetchrow(
                _RECORD_SENT,
                DeliveryStatus.SENT.value,
                ids,
                provider_ids,
                attempts,
                now,
                DeliveryStatus.SENDING.value,
                campaign_id,
                self._workspace_id,
            )
        return _campaign(row, self._workspace_id), int(row["recorded"]) if row is not None else 0
