"""Delivering an endpoint's messages: what one job does for one endpoint.

One deliverer at a time per endpoint (a lease on the endpoint row), many requests in flight inside it. Each
round reads a window of the endpoint's due messages in emission order, sends them concurrently (one POST per
message over reused keep-alive connections) except that messages sharing an ordering key go one after another,
and records the outcome of the whole round in one transaction: the messages, the attempts (the delivery log)
and the endpoint's health.

- **At least once**: a message is SUCCEEDED only after a 2xx answer; a crash between the answer and the record
  sends it again (receivers deduplicate on ``webhook-id``).
- **Retries**: a failed attempt (no answer, a timeout, any status but 2xx, redirects included) is tried again
  after RETRY_DELAYS[attempt - 1]: 5 s, 1 min, 5 min, 30 min, 2 h, 5 h, 8 h and 8 h, so about 24 hours and nine
  attempts, and then the message is FAILED.
- **Order per key**: a message whose key has an earlier PENDING message (waiting for its retry) is held back
  until that one succeeds or fails for good.
- **Disabling**: an endpoint whose every attempt failed for DISABLE_AFTER (three days) is disabled with the
  reason, and its pending messages are FAILED; any success in between starts the count again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import pg_driver
from emailkit.db.engine import Database
from emailkit.db.tables.webhooks_out import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookMessage,
    WebhookMessageStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.webhooks_out import sealing, signing
from emailkit.domain.webhooks_out.destinations import InvalidUrl, Target, parse_url
from emailkit.domain.webhooks_out.emit import subscriptions

log = logging.getLogger(__name__)

RETRY_DELAYS: Final = (
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=8),
    timedelta(hours=8),
)
MAX_ATTEMPTS: Final = len(RETRY_DELAYS) + 1
DISABLE_AFTER: Final = timedelta(days=3)
DISABLED_ERROR: Final = "The endpoint was disabled before this message was delivered"
# What of a failing answer's body is kept in the log.
ERROR_BODY_CHARS: Final = 200

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one POST came to: the status (None when no HTTP answer came), or the error."""

    status: int | None
    duration_ms: int
    error: str | None = None
    body_excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str | None:
        if self.ok:
            return None
        if self.status is None:
            return self.error or "no answer"
        excerpt = " ".join(self.body_excerpt.split())[:ERROR_BODY_CHARS]
        return f"HTTP {self.status}" + (f": {excerpt}" if excerpt else "")


class WebhookPoster(Protocol):
    """Sends one POST; never raises for what happened on the wire (that is an Answer), only for bugs."""

    async def post(
        self, target: Target, body: bytes, headers: Sequence[tuple[str, str]], *, time_limit: float
    ) -> Answer: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class DeliveryConfig:
    # EMAILKIT_WEBHOOK_ALLOW_PRIVATE (see destinations).
    allow_private: bool = False
    # Requests in flight per endpoint in one process; also the connections kept open to it.
    concurrency: int = 32
    # Messages read per round.
    window: int = 500
    timeout_seconds: float = 15.0
    # A job silent this long on an endpoint is presumed dead and another may take the endpoint over.
    lease_seconds: float = 120.0
    # A job hands its endpoint back after this long (and is enqueued again), so one busy endpoint does not
    # hold a worker thread for ever.
    budget_seconds: float = 60.0
    # The ticker enqueues an endpoint with due messages again after this long without a job taking it.
    requeue_after_seconds: float = 30.0
    disable_after: timedelta = DISABLE_AFTER


@dataclass
class WebhookSetup:
    """A process's webhook delivery: its settings and its HTTP client (built on first use, on the event loop
    that uses it, by the job layer, since the domain does not know the client's implementation)."""

    config: DeliveryConfig = field(default_factory=DeliveryConfig)
    _poster: WebhookPoster | None = field(default=None, repr=False)

    def poster(self, build: Callable[[], WebhookPoster]) -> WebhookPoster:
        if self._poster is None:
            self._poster = build()
        return self._poster

    async def aclose(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            await poster.aclose()


@dataclass
class Outcome:
    claimed: bool = False
    succeeded: int = 0
    failed: int = 0
    # The run's budget ended with due messages left: enqueue the endpoint again at once.
    more: bool = False
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class _Message:
    id: int
    event_id: str
    ordering_key: str | None
    body: bytes
    attempts: int


@dataclass(slots=True)
class _Endpoint:
    id: int
    workspace_id: int
    url: str
    secret_sealed: str
    failing_since: datetime | None
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class _Result:
    message: _Message
    at: datetime
    answer: Answer


@dataclass(frozen=True, slots=True)
class _Round:
    """What the next window must know of the round still being written."""

    # The last id its window read: the next window starts after it.
    after: int
    # Ordering key → the id of its message that failed in that round (later ones of the key wait).
    failed: dict[str, int]


def _failed_keys(results: Sequence[_Result]) -> dict[str, int]:
    failed: dict[str, int] = {}
    for r in results:
        key = r.message.ordering_key
        if key is not None and not r.answer.ok:
            failed[key] = min(r.message.id, failed.get(key, r.message.id))
    return failed


def next_attempt(attempts: int, at: datetime) -> datetime | None:
    """When a message that failed its `attempts`-th attempt at `at` is tried again; None: never (FAILED)."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return at + RETRY_DELAYS[attempts - 1]


def plan(due: Sequence[_Message], blocked_from: dict[str, int]) -> list[list[_Message]]:
    """The round's groups: each message alone, except that messages sharing a key form one group in id order;
    a key with an earlier message still waiting (`blocked_from`: key → smallest waiting id) is left out."""
    groups: list[list[_Message]] = []
    by_key: dict[str, list[_Message]] = {}
    for message in due:
        key = message.ordering_key
        if key is None:
            groups.append([message])
            continue
        if key in blocked_from and blocked_from[key] < message.id:
            continue
        group = by_key.get(key)
        if group is None:
            group = by_key[key] = []
            groups.append(group)
        group.append(message)
    return groups


_MESSAGES = cast(Table, WebhookMessage.__table__)
_ATTEMPTS = cast(Table, WebhookAttempt.__table__)
_RECORD = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("m_id"))
    .values(
        status=bindparam("m_status"),
        attempts=_MESSAGES.c.attempts + 1,
        next_attempt_at=bindparam("m_next"),
        last_attempt_at=bindparam("m_at"),
        response_code=bindparam("m_code"),
        duration_ms=bindparam("m_ms"),
        error=bindparam("m_error"),
        delivered_at=bindparam("m_delivered"),
    )
)


class Deliverer:
    """Delivers the due messages of one endpoint per :meth:`run` (run it inside the endpoint's workspace)."""

    def __init__(
        self,
        db: Database,
        poster: WebhookPoster,
        instance_secret: str,
        config: DeliveryConfig | None = None,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.poster = poster
        self.instance_secret = instance_secret
        self.config = config or DeliveryConfig()
        self.clock = clock

    async def run(self, endpoint_id: int) -> Outcome:
        outcome = Outcome()
        endpoint = await self._claim(endpoint_id)
        if endpoint is None:
            return outcome
        outcome.claimed = True
        try:
            await self._rounds(endpoint, outcome)
        finally:
            await self._release(endpoint)
        return outcome

    def _credentials(self, endpoint: _Endpoint) -> tuple[Target | None, bytes | None, str | None]:
        """Where to send and the key that signs, or why nothing can be sent (each attempt fails saying so)."""
        try:
            target = parse_url(endpoint.url)
            key = sealing.secret_bytes(sealing.unseal(endpoint.secret_sealed, self.instance_secret))
        except (InvalidUrl, sealing.SecretUnreadable) as exc:
            return None, None, str(exc)
        return target, key, None

    async def _rounds(self, endpoint: _Endpoint, outcome: Outcome) -> None:
        """Rounds until nothing is due, nothing gets through, or the budget is spent. A round's outcome is
        written while the next round is sent (one round in flight): the next window reads only messages after
        the previous one, and holds back the keys whose message failed in it."""
        target, key, problem = self._credentials(endpoint)
        started = time.monotonic()
        recording: asyncio.Task[bool] | None = None
        previous: _Round | None = None
        try:
            while True:
                window = await self._window(endpoint.id, previous)
                if window is None or (not window[0] and previous is None):
                    if recording is None or previous is None:
                        return
                    # Written: read once more from the start, for messages the pipelined windows passed by.
                    outcome.disabled = await recording
                    recording, previous = None, None
                    if outcome.disabled:
                        return
                    continue
                groups, last_id = window
                results = await self._send(groups, target, key, problem) if groups else []
                if recording is not None:
                    outcome.disabled = await recording
                    recording = None
                succeeded = sum(1 for r in results if r.answer.ok)
                outcome.succeeded += succeeded
                outcome.failed += len(results) - succeeded
                if results:
                    recording = asyncio.create_task(self._record(endpoint, results))
                previous = _Round(last_id, _failed_keys(results))
                if outcome.disabled or (results and succeeded == 0):
                    # Disabled, or nothing gets through: leave the rest of the due messages to the ticker's
                    # next dispatch (a second later) rather than spend every first attempt of a backlog now.
                    return
                if time.monotonic() - started >= self.config.budget_seconds:
                    outcome.more = True
                    return
        finally:
            if recording is not None:
                disabled = await recording
                outcome.disabled = outcome.disabled or disabled

    async def _claim(self, endpoint_id: int) -> _Endpoint | None:
        now = self.clock()
        lease_until = now + timedelta(seconds=self.config.lease_seconds)
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(WebhookEndpoint)
                .where(
                    WebhookEndpoint.id == endpoint_id,
                    WebhookEndpoint.status == WebhookEndpointStatus.ENABLED,
                    or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until < now),
                )
                .values(lease_until=lease_until, enqueued_at=None)
                .execution_options(synchronize_session=False)
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                return None
            row = (
                await session.execute(
                    select(
                        WebhookEndpoint.workspace_id,
                        WebhookEndpoint.url,
                        WebhookEndpoint.secret_sealed,
                        WebhookEndpoint.failing_since,
                    ).where(WebhookEndpoint.id == endpoint_id)
                )
            ).one()
        return _Endpoint(endpoint_id, int(row[0]), row[1], row[2], row[3], lease_until)

    async def _release(self, endpoint: _Endpoint) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.lease_until == endpoint.lease_until)
                .values(lease_until=None)
                .execution_options(synchronize_session=False)
            )

    async def _window(
        self, endpoint_id: int, previous: _Round | None
    ) -> tuple[list[list[_Message]], int] | None:
        """The next round's groups and the last id read; None when no due message is left to read."""
        now = self.clock()
        m = WebhookMessage
        stmt = (
            select(m.id, m.event_id, m.ordering_key, m.payload, m.attempts)
            .where(m.endpoint_id == endpoint_id, m.status == WebhookMessageStatus.PENDING)
            .where(m.next_attempt_at <= now)
            .order_by(m.id)
            .limit(self.config.window)
        )
        if previous is not None:
            stmt = stmt.where(m.id > previous.after)
        async with self.db.read_session() as session:
            rows = (await session.execute(stmt)).all()
            if not rows:
                return None
            due = [_Message(int(r[0]), r[1], r[2], r[3].encode(), int(r[4])) for r in rows]
            keys = sorted({d.ordering_key for d in due if d.ordering_key is not None})
            blocked_from = await self._waiting(session, endpoint_id, keys, due[-1].id, now) if keys else {}
        if previous is not None:
            for k, i in previous.failed.items():
                blocked_from[k] = min(i, blocked_from.get(k, i))
        return plan(due, blocked_from), due[-1].id

    @staticmethod
    async def _waiting(
        session: AsyncSession, endpoint_id: int, keys: list[str], before: int, now: datetime
    ) -> dict[str, int]:
        """Of `keys`, those with a PENDING message not yet due before id `before`: key → its smallest id."""
        m = WebhookMessage
        rows = await session.execute(
            select(m.ordering_key, func.min(m.id))
            .where(m.endpoint_id == endpoint_id, m.status == WebhookMessageStatus.PENDING)
            .where(m.next_attempt_at > now, m.id < before, m.ordering_key.in_(keys))
            .group_by(m.ordering_key)
        )
        return {str(k): int(i) for k, i in rows.all()}

    async def _send(
        self, groups: list[list[_Message]], target: Target | None, key: bytes | None, problem: str | None
    ) -> list[_Result]:
        results: list[_Result] = []
        slots = asyncio.Semaphore(self.config.concurrency)

        async def attempt(message: _Message) -> _Result:
            at = self.clock()
            if target is None or key is None:
                return _Result(message, at, Answer(None, 0, problem))
            stamp = int(at.timestamp())
            headers = signing.headers(key, message.event_id, stamp, message.body)
            async with slots:
                answer = await self.poster.post(
                    target, message.body, headers, time_limit=self.config.timeout_seconds
                )
            return _Result(message, at, answer)

        async def in_order(group: list[_Message]) -> None:
            for message in group:
                result = await attempt(message)
                results.append(result)
                if not result.answer.ok:
                    return  # the rest of its key waits behind it

        if len(groups) == 1:
            await in_order(groups[0])
        else:
            await asyncio.gather(*(in_order(g) for g in groups))
        return results

    async def _record(self, endpoint: _Endpoint, results: list[_Result]) -> bool:
        """Write the round's outcome; True when it disabled the endpoint."""
        now = self.clock()
        rows = [_row(r) for r in results]
        failing_since = self._health(endpoint, results)
        disable = failing_since is not None and now - failing_since >= self.config.disable_after
        async with self.db.transaction() as session:
            if self.db.dialect == "postgresql":
                await _write_postgres(session, endpoint.workspace_id, rows)
            else:
                await _write_portable(session, endpoint.workspace_id, rows)
            # The lease is extended with every round, so a long run is not taken for a dead one.
            endpoint.lease_until = now + timedelta(seconds=self.config.lease_seconds)
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint.id)
                .values(failing_since=failing_since, lease_until=endpoint.lease_until)
                .execution_options(synchronize_session=False)
            )
            if disable:
                assert failing_since is not None
                last = next((r.answer.describe() for r in reversed(results) if not r.answer.ok), None)
                await disable_endpoint(
                    session,
                    endpoint.id,
                    f"Every delivery failed for {_days(now - failing_since)} (since "
                    f"{failing_since.isoformat(timespec='seconds')}; last error: {last})",
                    now,
                )
        if disable:
            subscriptions.invalidate(endpoint.workspace_id)
            log.warning("webhook endpoint %s disabled after failing since %s", endpoint.id, failing_since)
        return disable

    @staticmethod
    def _health(endpoint: _Endpoint, results: list[_Result]) -> datetime | None:
        """The endpoint's new `failing_since`: cleared by any success, else started by the first failure."""
        if any(r.answer.ok for r in results):
            endpoint.failing_since = None
        elif results and endpoint.failing_since is None:
            endpoint.failing_since = min(r.at for r in results)
        return endpoint.failing_since


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86_400
    return f"{days:.1f} days"


@dataclass(frozen=True, slots=True)
class _Row:
    """One attempt's outcome as it is written: the message's new state, and its line in the log."""

    id: int
    status: WebhookMessageStatus
    next_at: datetime | None
    at: datetime
    code: int | None
    ms: int
    error: str | None
    ok: bool


def _row(r: _Result) -> _Row:
    ok = r.answer.ok
    retry_at = None if ok else next_attempt(r.message.attempts + 1, r.at)
    if ok:
        status = WebhookMessageStatus.SUCCEEDED
    else:
        status = WebhookMessageStatus.PENDING if retry_at is not None else WebhookMessageStatus.FAILED
    return _Row(
        r.message.id, status, retry_at, r.at, r.answer.status, r.answer.duration_ms, r.answer.describe(), ok
    )


async def _write_portable(session: AsyncSession, workspace_id: int, rows: list[_Row]) -> None:
    await session.execute(
        _RECORD,
        [
            {
                "m_id": r.id,
                "m_status": r.status,
                "m_next": r.next_at,
                "m_at": r.at,
                "m_code": r.code,
                "m_ms": r.ms,
                "m_error": r.error,
                "m_delivered": r.at if r.ok else None,
            }
            for r in rows
        ],
    )
    await session.execute(
        _ATTEMPTS.insert(),
        [
            {
                "workspace_id": workspace_id,
                "message_id": r.id,
                "attempted_at": r.at,
                "succeeded": r.ok,
                "response_code": r.code,
                "duration_ms": r.ms,
                "error": r.error,
            }
            for r in rows
        ],
    )


# PostgreSQL: a round as array parameters, straight to the driver (no per-row parameter processing): the
# round's write took as long as sending it through executemany (≈ 47 ms for 500 messages under load).
_PG_RECORD = """
UPDATE webhook_messages AS m SET status = v.status, attempts = m.attempts + 1, next_attempt_at = v.next_at,
    last_attempt_at = v.at, response_code = v.code, duration_ms = v.ms, error = v.error,
    delivered_at = CASE WHEN v.status = 'SUCCEEDED' THEN v.at END
FROM unnest($2::bigint[], $3::varchar[], $4::timestamptz[], $5::timestamptz[], $6::int[], $7::int[], $8::text[])
    AS v(id, status, next_at, at, code, ms, error)
WHERE m.id = v.id AND m.workspace_id = $1
"""
_PG_LOG = """
INSERT INTO webhook_attempts (workspace_id, message_id, attempted_at, succeeded, response_code, duration_ms, error)
SELECT $1, * FROM unnest($2::bigint[], $3::timestamptz[], $4::bool[], $5::int[], $6::int[], $7::text[])
"""


async def _write_postgres(session: AsyncSession, workspace_id: int, rows: list[_Row]) -> None:
    driver = await pg_driver(session)
    ids = [r.id for r in rows]
    at = [r.at for r in rows]
    codes = [r.code for r in rows]
    ms = [r.ms for r in rows]
    errors = [r.error for r in rows]
    statuses = [r.status.value for r in rows]
    await driver.execute(
        _PG_RECORD, workspace_id, ids, statuses, [r.next_at for r in rows], at, codes, ms, errors
    )
    await driver.execute(_PG_LOG, workspace_id, ids, at, [r.ok for r in rows], codes, ms, errors)


async def disable_endpoint(session: AsyncSession, endpoint_id: int, reason: str, now: datetime) -> None:
    """DISABLED with `reason`; its PENDING messages are FAILED (redeliverWebhook sends one again once the
    endpoint is enabled). The caller invalidates the subscription cache after the commit."""
    await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(
            status=WebhookEndpointStatus.DISABLED, disabled_reason=reason, disabled_at=now, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.endpoint_id == endpoint_id, WebhookMessage.status == WebhookMessageStatus.PENDING
        )
        .values(
            status=WebhookMessageStatus.FAILED,
            next_attempt_at=None,
            error=DISABLED_ERROR,
        )
        .execution_options(synchronize_session=False)
    )
