"""Crash safety of the HTTP providers, end to end: a real `emailkit worker` process on PostgreSQL and a private
redis-server, sending a 5,000-recipient campaign through moto's SES server or a local SendGrid-like server
that records what it accepted; SIGKILLed mid-campaign, then a second worker finishes.

What the peer received is counted against the ledger: nobody twice, and every recipient SENT (and received),
FAILED with a reason, or IN_DOUBT. In doubt are only the requests the killed worker had in flight: each one
is committed as SENDING right before it goes out and recorded before its slot is reused, so at most
EMAILKIT_PROVIDER_CONCURRENCY requests' recipients are in doubt: one each for SES, up to a batch's for
SendGrid, which sends a campaign's personalised messages up to 1000 per request.

Collected when EMAILKIT_TEST_DATABASE_URL and EMAILKIT_TEST_REDIS_URL are set (as in CI).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_string
from email.utils import parseaddr
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign, CampaignBatch, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import dispatch, lifecycle
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE
from emailkit.tasks.broker.factory import configure_broker
from emailkit.tasks.broker.queue import DramatiqJobQueue
from tests.support.audience import seed_campaign
from tests.support.environment import PG_APP_URL, PG_URL, REDIS_URL, TEST_SECRET
from tests.support.provider_apis.sendgrid import API_KEY, sendgrid_server
from tests.support.redis_server import RedisServer
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.crash, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

RECIPIENTS = 5000
BATCH_SIZE = 500
CONCURRENCY = 8
LEASE_SECONDS = 5
REGION = "us-east-1"
SENDER = "news@crash.test"  # seed_campaign's From


def worker_env(tmp: Path, redis: RedisServer, provider: dict[str, str]) -> dict[str, str]:
    assert PG_URL is not None
    return {
        "EMAILKIT_DATABASE_URL": PG_APP_URL,
        "EMAILKIT_BROKER_URL": redis.url,
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_PUBLIC_URL": "http://mail.crash.test",
        "EMAILKIT_DATA_DIR": str(tmp),
        "EMAILKIT_PROVIDER_CONCURRENCY": str(CONCURRENCY),
        "EMAILKIT_BATCH_SIZE": str(BATCH_SIZE),
        "EMAILKIT_BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
        "EMAILKIT_WORKER_HEARTBEAT_SECONDS": "5",
        "EMAILKIT_REQUEUE_AFTER_SECONDS": "4",
        "EMAILKIT_WORKER_THREADS": "4",
        "EMAILKIT_LOG_LEVEL": "INFO",
        **provider,
    }


@pytest.fixture
def moto_url() -> Iterator[str]:
    # A process of its own: in this one, moto's request handling would compete with the test for the GIL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        admin = boto3.client(
            "sesv2", endpoint_url=url, region_name=REGION, aws_access_key_id="a", aws_secret_access_key="a"
        )
        admin.create_email_identity(EmailIdentity=SENDER)
        yield url
    finally:
        server.kill()
        server.wait()


def ses_sent_count(url: str) -> Callable[[], int]:
    v1 = boto3.client(
        "ses", endpoint_url=url, region_name=REGION, aws_access_key_id="a", aws_secret_access_key="a"
    )
    return lambda: int(v1.get_send_quota()["SentLast24Hours"])


def ses_received(url: str) -> Counter[str]:
    data = httpx.get(f"{url}/moto-api/data.json", timeout=30).json()
    return Counter(parseaddr(message_from_string(m["raw_data"])["To"])[1] for m in data["ses"]["RawMessage"])


async def start(db: Database, redis: RedisServer, campaign_id: int) -> None:
    broker = configure_broker(redis.url)
    try:
        runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://x", jobs=DramatiqJobQueue(broker))
        started = await dispatch.commit_then_enqueue(
            runtime, lambda s: lifecycle.start_campaign_with_jobs(s, campaign_id, batch_size=BATCH_SIZE)
        )
        started.or_raise()
    finally:
        broker.close()


async def wait_until(
    what: str, check: Callable[[], bool], within: float, workers: list[WorkerProcess]
) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {w.name}:\n{w.log(30)}" for w in workers)
            raise AssertionError(f"not {what} after {within}s\n{logs}")
        await asyncio.sleep(0.05)


async def finished(db: Database, campaign_id: int, workers: list[WorkerProcess]) -> Campaign:
    deadline = time.monotonic() + 120
    while True:
        async with db.session() as s:
            row = await s.get(Campaign, campaign_id)
            assert row is not None
        if row.status is CampaignStatus.FINISHED:
            return row
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {w.name}:\n{w.log(30)}" for w in workers)
            raise AssertionError(f"campaign {row.status.value}, sent {row.sent_count}\n{logs}")
        await asyncio.sleep(0.25)


async def kill_mid_campaign_and_finish(
    db: Database,
    redis: RedisServer,
    tmp: Path,
    provider: dict[str, str],
    received: Callable[[], Counter[str]],
    received_count: Callable[[], int],
    *,
    per_request: int = 1,
    requests: Callable[[], list[set[str]]] | None = None,
) -> None:
    env = worker_env(tmp, redis, provider)
    first = WorkerProcess(env, name="worker-1")
    workers = [first]
    try:
        campaign_id, emails = await seed_campaign(db, RECIPIENTS)
        await first.wait_for_log("worker ready")
        await start(db, redis, campaign_id)
        await wait_until("1500 received", lambda: received_count() >= 1500, 45, workers)
        assert first.alive()
        first.kill()
        at_kill = received_count()
        assert at_kill < RECIPIENTS, "the campaign was over before the kill"
        second = WorkerProcess(env, name="worker-2")
        workers.append(second)
        await second.wait_for_log("worker ready")
        row = await finished(db, campaign_id, workers)

        async with db.session() as s:
            rows = (
                await s.execute(
                    select(Delivery.email, Delivery.status, Delivery.last_error).where(
                        Delivery.campaign_id == campaign_id
                    )
                )
            ).all()
            attempts = (
                await s.execute(
                    select(CampaignBatch.attempts).where(CampaignBatch.campaign_id == campaign_id)
                )
            ).scalars()
            assert max(attempts) >= 2, "no batch of the killed worker was taken over"
        got = received()
        assert {e: n for e, n in got.items() if n > 1} == {}, "someone received the campaign twice"
        assert set(got) <= set(emails)
        status = {r.email: r.status for r in rows}
        assert len(status) == RECIPIENTS
        sent = {e for e, st in status.items() if st is DeliveryStatus.SENT}
        failed = {r.email for r in rows if r.status is DeliveryStatus.FAILED and r.last_error}
        in_doubt = {
            r.email for r in rows if r.status is DeliveryStatus.IN_DOUBT and r.last_error == IN_DOUBT_NOTE
        }
        assert sent | failed | in_doubt == set(emails), Counter(status.values())
        # Everyone recorded as sent did arrive; whoever arrived is sent or in doubt.
        assert sent <= set(got) <= sent | in_doubt
        # In doubt: at most the requests the killed worker had in flight.
        assert len(in_doubt) <= CONCURRENCY * per_request
        if requests is not None:
            # Whole requests: those of them that arrived came in at most that many requests.
            carrying = [r for r in requests() if r & in_doubt]
            assert len(carrying) <= CONCURRENCY
            assert all(r <= in_doubt for r in carrying), "a request was recorded for some recipients only"
        assert (row.sent_count, row.failed_count, row.in_doubt_count) == (
            len(sent),
            len(failed),
            len(in_doubt),
        )
        assert row.sent_count + row.failed_count + row.in_doubt_count == row.recipients_count == RECIPIENTS
        assert second.alive()
    finally:
        for worker in workers:
            worker.kill()


async def _sigkill_mid_campaign_through_ses(
    db: Database, redis_server: RedisServer, moto_url: str, tmp_path: Path
) -> None:
    provider = {
        "EMAILKIT_PROVIDER": "ses",
        "EMAILKIT_SES_REGION": REGION,
        "EMAILKIT_SES_ENDPOINT_URL": moto_url,
        "EMAILKIT_SES_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "EMAILKIT_SES_SECRET_ACCESS_KEY": "secret",
    }
    await kill_mid_campaign_and_finish(
        db, redis_server, tmp_path, provider, lambda: ses_received(moto_url), ses_sent_count(moto_url)
    )


async def _sigkill_mid_campaign_through_sendgrid(
    db: Database, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with sendgrid_server() as (url, state):
        # Slow enough that the kill lands while requests are in flight.
        state.delay = 0.02

        def received() -> Counter[str]:
            return Counter(
                to["email"] for body in state.accepted for p in body["personalizations"] for to in p["to"]
            )

        provider = {
            "EMAILKIT_PROVIDER": "sendgrid",
            "EMAILKIT_SENDGRID_API_KEY": API_KEY,
            "EMAILKIT_SENDGRID_BASE_URL": url,
        }

        def requests() -> list[set[str]]:
            return [
                {to["email"] for p in body["personalizations"] for to in p["to"]} for body in state.accepted
            ]

        await kill_mid_campaign_and_finish(
            db,
            redis_server,
            tmp_path,
            provider,
            received,
            lambda: received().total(),
            per_request=BATCH_SIZE,
            requests=requests,
        )


if PG_URL and REDIS_URL:
    # Collected only with PostgreSQL and Redis wanted (never skipped: without them there is nothing to run).
    test_sigkill_mid_campaign_through_ses = _sigkill_mid_campaign_through_ses
    test_sigkill_mid_campaign_through_sendgrid = _sigkill_mid_campaign_through_sendgrid
