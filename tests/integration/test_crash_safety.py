"""Crash safety of campaign sending, end to end: real `emailkit worker` processes on PostgreSQL and a
private redis-server, sending through the smtp provider into an SMTP sink that counts what it accepted.

* a worker SIGKILLed in the middle of a 20,000-recipient campaign, and a new one started;
* the redis-server SIGKILLed mid-campaign (every queued message lost) and started again;
* the SMTP server answering 421/451 for a while;
* the SMTP server answering 550 for some addresses, then accepting them on `retryFailedDeliveries`.

Each ends with every address received at most once. The one allowance is the killed worker's hand-over:
what it had committed as SENDING and not yet recorded becomes IN_DOUBT (never counted as sent, never sent
again). SMTP results are recorded per chunk, so that is at most a chunk per running batch, and of those the
server discarded at most one message per SMTP connection (committed, its final "." not yet written): the
first test checks both bounds.

Collected when EMAILKIT_TEST_DATABASE_URL and EMAILKIT_TEST_REDIS_URL are set (as in CI); the Redis URL
only says that Redis tests are wanted: each test runs its own redis-server so it can kill it.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from emailkit.app import create_app, sending_setup
from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign, CampaignBatch, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE
from emailkit.providers.senders import SenderProviderFactory
from emailkit.providers.smtp import REPORT_EVERY
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.broker.factory import configure_broker
from emailkit.tasks.broker.queue import DramatiqJobQueue
from tests.support.audience import seed_campaign
from tests.support.environment import PG_APP_URL, PG_URL, REDIS_URL, TEST_SECRET
from tests.support.factories import make_key
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.crash, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

PUBLIC_URL = "http://mail.crash.test"
BATCH_SIZE = 500
# Short, so that recovery from a dead worker or a lost queue message takes seconds, not minutes.
LEASE_SECONDS = 5
HEARTBEAT_SECONDS = 5
REQUEUE_AFTER_SECONDS = 4
SMTP_POOL_SIZE = 5
CHUNK_SIZE = 200  # SendingConfig.chunk_size
WORKER_THREADS = 4

# -- set-up ------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The services a test runs against, and the API (an app object whose jobs go to the private Redis)."""

    db: Database
    redis: RedisServer
    sink: CountingSink
    api: httpx.AsyncClient
    api_key: str
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list, init=False)
    # The API's runtime, for tests that point its lookups elsewhere (e.g. DNS at a test server).
    runtime: Runtime = field(init=False)

    def worker_env(self) -> dict[str, str]:
        assert PG_URL is not None
        return {
            "EMAILKIT_DATABASE_URL": PG_APP_URL,
            "EMAILKIT_BROKER_URL": self.redis.url,
            "EMAILKIT_SECRET_KEY": TEST_SECRET,
            "EMAILKIT_PUBLIC_URL": PUBLIC_URL,
            "EMAILKIT_DATA_DIR": str(self.tmp),
            "EMAILKIT_PROVIDER": "smtp",
            "EMAILKIT_SMTP_URL": self.sink.url,
            "EMAILKIT_SMTP_POOL_SIZE": str(SMTP_POOL_SIZE),
            "EMAILKIT_BATCH_SIZE": str(BATCH_SIZE),
            "EMAILKIT_BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
            "EMAILKIT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "EMAILKIT_REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER_SECONDS),
            "EMAILKIT_WORKER_THREADS": str(WORKER_THREADS),
            "EMAILKIT_LOG_LEVEL": "INFO",
        }

    def spawn_workers(self, count: int) -> list[WorkerProcess]:
        """Start `emailkit worker` processes (they boot while the test goes on; see `ready`)."""
        first = len(self.started) + 1
        started = [WorkerProcess(self.worker_env(), name=f"worker-{first + i}") for i in range(count)]
        self.started.extend(started)
        return started

    async def workers(self, count: int) -> list[WorkerProcess]:
        return await ready(self.spawn_workers(count))

    def stop_workers(self) -> None:
        for worker in self.started:
            worker.kill()

    async def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        resp = await self.api.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def start_campaign(self, campaign_id: int) -> None:
        out = await self.gql(
            "mutation($id: ID!) { startCampaign(input: {id: $id}) { campaign { status } userErrors { code message } } }",
            id=to_global_id("Campaign", campaign_id),
        )
        assert out["startCampaign"]["userErrors"] == []
        assert out["startCampaign"]["campaign"]["status"] == "RUNNING"


StackT = TypeVar("StackT", bound=Stack)


async def ready(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    for worker in workers:
        await worker.wait_for_log("worker ready")
    return workers


@asynccontextmanager
async def open_stack(
    kind: type[StackT],
    db: Database,
    redis_server: RedisServer,
    sink: CountingSink,
    tmp_path: Path,
    *,
    broker_url: str | None = None,
) -> AsyncIterator[StackT]:
    """The API (in this process) of a stack whose jobs go to `broker_url` (the private Redis by default)."""
    broker_url = broker_url or redis_server.url
    settings = Settings(
        database_url=db.url,
        broker_url=broker_url,
        redis_url=redis_server.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url=PUBLIC_URL,
        provider="smtp",
        smtp_url=sink.url,  # type: ignore[arg-type]
        batch_size=BATCH_SIZE,
        data_dir=tmp_path,
    )
    broker = configure_broker(broker_url)
    runtime = Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url=PUBLIC_URL,
        jobs=DramatiqJobQueue(broker),
        sending=sending_setup(settings),
        sender_factory=SenderProviderFactory(outbox_root=settings.outbox_dir),
        sender_allow_private=True,
    )
    app = create_app(settings, runtime)
    api_key = await make_key(db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as api:
        stack = kind(db, redis_server, sink, api, api_key, tmp_path)
        stack.runtime = runtime
        try:
            yield stack
        finally:
            stack.stop_workers()
            broker.close()


@pytest.fixture
async def stack(
    db: Database, redis_server: RedisServer, sink: CountingSink, tmp_path: Path
) -> AsyncIterator[Stack]:
    assert PG_URL is not None
    async with open_stack(Stack, db, redis_server, sink, tmp_path) as opened:
        yield opened


# -- observing -----------------------------------------------------------------------------------------


async def campaign_row(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row


async def wait_for_status(
    db: Database, campaign_id: int, status: CampaignStatus, within: float, workers: list[WorkerProcess]
) -> Campaign:
    deadline = time.monotonic() + within
    while True:
        row = await campaign_row(db, campaign_id)
        if row.status is status:
            return row
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {w.name}:\n{w.log(30)}" for w in workers)
            raise AssertionError(
                f"campaign still {row.status.value} after {within}s (sent {row.sent_count}, failed "
                f"{row.failed_count} of {row.recipients_count})\n{logs}"
            )
        await asyncio.sleep(0.25)


@dataclass
class Ledger:
    status: dict[str, DeliveryStatus]
    attempts: dict[str, int]
    last_error: dict[str, str | None]

    def with_status(self, status: DeliveryStatus) -> set[str]:
        return {email for email, st in self.status.items() if st is status}


async def ledger(db: Database, campaign_id: int) -> Ledger:
    async with db.session() as s:
        rows = (
            await s.execute(
                select(Delivery.email, Delivery.status, Delivery.attempts, Delivery.last_error).where(
                    Delivery.campaign_id == campaign_id
                )
            )
        ).all()
    return Ledger(
        status={r.email: r.status for r in rows},
        attempts={r.email: r.attempts for r in rows},
        last_error={r.email: r.last_error for r in rows},
    )


async def batch_attempts(db: Database, campaign_id: int) -> list[int]:
    async with db.session() as s:
        stmt = select(CampaignBatch.attempts).where(CampaignBatch.campaign_id == campaign_id)
        return list((await s.execute(stmt)).scalars())


def duplicates(accepted: Counter[str]) -> dict[str, int]:
    return {email: n for email, n in accepted.items() if n > 1}


async def assert_everyone_exactly_once(
    stack: Stack, campaign_id: int, emails: list[str], *, missing_bound: int = 0, in_doubt_bound: int = 0
) -> Ledger:
    """Every address received at most once; every delivery SENT or IN_DOUBT; counters agree with the ledger.

    Addresses the sink never accepted are allowed only as in-doubt deliveries (a worker killed during
    the hand-over), at most `missing_bound` of them, among at most `in_doubt_bound` in doubt.
    """
    accepted = stack.sink.accepted()
    book = await ledger(stack.db, campaign_id)
    row = await campaign_row(stack.db, campaign_id)
    assert duplicates(accepted) == {}
    assert set(accepted) <= set(emails)
    assert len(book.status) == len(emails)
    sent, in_doubt = book.with_status(DeliveryStatus.SENT), book.with_status(DeliveryStatus.IN_DOUBT)
    assert sent | in_doubt == set(emails)
    assert sent <= set(accepted)
    assert all(book.last_error[email] == IN_DOUBT_NOTE for email in in_doubt)
    missing = set(emails) - set(accepted)
    assert missing <= in_doubt, f"{len(missing - in_doubt)} addresses never sent and not in doubt"
    assert len(missing) <= missing_bound
    assert len(in_doubt) <= in_doubt_bound
    assert (
        row.recipients_count,
        row.sent_count,
        row.in_doubt_count,
        row.failed_count,
        row.skipped_count,
    ) == (len(emails), len(sent), len(in_doubt), 0, 0)
    return book


# -- the tests -----------------------------------------------------------------------------------------


async def _sigkill_a_worker_mid_campaign(stack: Stack) -> None:
    booting = stack.spawn_workers(2)
    campaign_id, emails = await seed_campaign(stack.db, 20_000)
    first, second = await ready(booting)
    await stack.start_campaign(campaign_id)
    await stack.sink.wait_until(lambda s: s.accepted_total >= 3000, within=60, what="3000 accepted")
    assert first.alive() and second.alive()
    first.kill()
    killed_at = stack.sink.accepted_total
    await stack.workers(1)
    row = await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 120, stack.started)
    assert row.status_reason is None
    # The killed worker held batches that others took over once its leases had expired.
    assert max(await batch_attempts(stack.db, campaign_id)) >= 2
    assert killed_at < len(emails)
    # One message per SMTP connection of the killed worker can be caught in the hand-over.
    await assert_everyone_exactly_once(
        stack,
        campaign_id,
        emails,
        missing_bound=SMTP_POOL_SIZE,
        # Results are recorded a group at a time as replies arrive: per running batch, about a group
        # unrecorded and a group being recorded, plus one message per session (a whole chunk, 200 per batch,
        # when results were recorded per chunk).
        in_doubt_bound=WORKER_THREADS * 2 * REPORT_EVERY + SMTP_POOL_SIZE,
    )
    assert second.alive()


async def _redis_restart_mid_campaign(stack: Stack) -> None:
    booting = stack.spawn_workers(2)
    campaign_id, emails = await seed_campaign(stack.db, 20_000)
    workers = await ready(booting)
    await stack.start_campaign(campaign_id)
    await stack.sink.wait_until(lambda s: s.accepted_total >= 2000, within=60, what="2000 accepted")
    # Batches wait in the queue (beyond what the workers hold): they are lost with the server.
    assert stack.redis.queued("sending") > 0
    stack.redis.kill()
    down = stack.sink.accepted_total
    # Both workers notice the broker is gone, and go on sending the batches they hold meanwhile (counted from
    # the kill: a fast worker may be well into them by the time its log says so).
    for worker in workers:
        await worker.wait_for_log("connection error", within=30)
    await stack.sink.wait_until(
        lambda s: s.accepted_total >= down + 1000, within=60, what="1000 more sent while Redis is down"
    )
    marks = [len(w.lines) for w in workers]
    # Back on the same port, empty: nothing was persisted.
    stack.redis.start()
    await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 120, workers)
    # The queue messages were lost with Redis: the scheduler tick found the batches and enqueued them again.
    assert any(
        "re-enqueueing" in line for worker, mark in zip(workers, marks) for line in worker.lines[mark:]
    ), "\n".join(w.log() for w in workers)
    await assert_everyone_exactly_once(stack, campaign_id, emails)
    # The workers lived through the outage.
    assert all(worker.alive() for worker in workers)


async def _transient_smtp_errors_are_retried(stack: Stack) -> None:
    booting = stack.spawn_workers(2)
    campaign_id, emails = await seed_campaign(stack.db, 600)
    # More refusals than recipients: the first pass fails entirely and some retries fail again.
    stack.sink.fail_next(100, "421 4.7.0 sink.test Service busy, closing transmission channel", stage="RCPT")
    stack.sink.fail_next(600, "451 4.3.0 Temporary local problem, try again later", stage="DATA")
    workers = await ready(booting)
    await stack.start_campaign(campaign_id)
    await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 90, workers)
    assert stack.sink.faults_left() == 0
    transient = stack.sink.transient_given()
    assert sum(transient.values()) == 700
    book = await assert_everyone_exactly_once(stack, campaign_id, emails)
    # Each attempt is on record: one per refusal plus the one that went through.
    assert {e: book.attempts[e] for e in emails} == {e: 1 + transient[e] for e in emails}
    assert max(transient.values()) >= 2
    # With backoff: a refused batch comes back after a delay (≈2 s at first), not at once.
    gaps = [b - a for times in stack.sink.attempt_times().values() for a, b in itertools.pairwise(times)]
    assert len(gaps) == 700 and statistics.median(gaps) >= 1.0


async def _permanent_rejections_fail_only_those(stack: Stack) -> None:
    booting = stack.spawn_workers(1)
    campaign_id, emails = await seed_campaign(stack.db, 1000)
    rejected = set(emails[7::25])
    reply = "550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table"
    stack.sink.reject(rejected, reply)
    workers = await ready(booting)
    await stack.start_campaign(campaign_id)
    row = await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 60, workers)
    assert (row.sent_count, row.failed_count) == (len(emails) - len(rejected), len(rejected))

    book = await ledger(stack.db, campaign_id)
    assert book.with_status(DeliveryStatus.FAILED) == rejected
    assert book.with_status(DeliveryStatus.SENT) == set(emails) - rejected
    accepted = stack.sink.accepted()
    assert set(accepted) == set(emails) - rejected and duplicates(accepted) == {}
    assert stack.sink.permanent_given() == Counter(dict.fromkeys(rejected, 1))
    # The API shows each failure with the server's own words.
    out = await stack.gql(
        """query($id: ID!) { campaign(id: $id) { deliveries(first: 100, status: FAILED) {
            totalCount edges { node { email attempts lastError } } } } }""",
        id=to_global_id("Campaign", campaign_id),
    )
    failed = out["campaign"]["deliveries"]
    assert failed["totalCount"] == len(rejected)
    assert {n["node"]["email"] for n in failed["edges"]} == rejected
    assert all(n["node"]["lastError"] == reply and n["node"]["attempts"] == 1 for n in failed["edges"])

    # The server accepts them now: retrying sends to those, and to nobody else.
    stack.sink.accept_everyone()
    out = await stack.gql(
        """mutation($id: ID!) { retryFailedDeliveries(input: {campaignId: $id}) {
            retried campaign { status } userErrors { code message } } }""",
        id=to_global_id("Campaign", campaign_id),
    )
    assert out["retryFailedDeliveries"] == {
        "retried": len(rejected),
        "campaign": {"status": "RUNNING"},
        "userErrors": [],
    }
    await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 60, workers)
    await assert_everyone_exactly_once(stack, campaign_id, emails)


if PG_URL and REDIS_URL:
    # Collected only with PostgreSQL and Redis wanted (never skipped: without them there is nothing to run).
    test_sigkill_a_worker_mid_campaign = _sigkill_a_worker_mid_campaign
    test_redis_restart_mid_campaign = _redis_restart_mid_campaign
    test_transient_smtp_errors_are_retried = _transient_smtp_errors_are_retried
    test_permanent_rejections_fail_only_those = _permanent_rejections_fail_only_those
