"""Campaigns on RabbitMQ, end to end: the README offers `EMAILKIT_BROKER_URL=amqp://…`, so CI proves it.

Real `emailkit worker` processes on PostgreSQL take their jobs from RabbitMQ (a private vhost on the
machine's server) and publish live progress through a private redis-server, sending through the smtp
provider into a counting sink:

* a whole campaign through two workers;
* a worker SIGKILLed mid-campaign and a new one started (RabbitMQ redelivers the dead worker's unacked
  messages at once; its batches are taken over when their leases expire).

Both end with every address received exactly once. Collected when EMAILKIT_TEST_AMQP_URL is set together
with the PostgreSQL and Redis variables, as in CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.sending import CampaignStatus
from emailkit.providers.smtp import REPORT_EVERY
from tests.integration.test_crash_safety import (
    SMTP_POOL_SIZE,
    WORKER_THREADS,
    Stack,
    assert_everyone_exactly_once,
    batch_attempts,
    open_stack,
    ready,
    wait_for_status,
)
from tests.support.audience import seed_campaign
from tests.support.environment import PG_URL, REDIS_URL
from tests.support.rabbitmq import private_vhost
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import CountingSink

AMQP_URL = os.environ.get("EMAILKIT_TEST_AMQP_URL")

pytestmark = [pytest.mark.crash, pytest.mark.parametrize("database", ["postgresql"], indirect=True)]


class AmqpStack(Stack):
    """The crash-test stack with RabbitMQ as the broker; Redis carries only live updates and rate limits."""

    amqp_url = ""

    def worker_env(self) -> dict[str, str]:
        return {
            **super().worker_env(),
            "EMAILKIT_BROKER_URL": self.amqp_url,
            "EMAILKIT_REDIS_URL": self.redis.url,
        }


@pytest.fixture
def vhost_url() -> Iterator[str]:
    assert AMQP_URL is not None
    with private_vhost(AMQP_URL) as url:
        yield url


@pytest.fixture
async def amqp_stack(
    db: Database, redis_server: RedisServer, sink: CountingSink, vhost_url: str, tmp_path: Path
) -> AsyncIterator[AmqpStack]:
    async with open_stack(AmqpStack, db, redis_server, sink, tmp_path, broker_url=vhost_url) as stack:
        stack.amqp_url = vhost_url
        yield stack


async def _campaign_through_two_workers(amqp_stack: AmqpStack) -> None:
    booting = amqp_stack.spawn_workers(2)
    campaign_id, emails = await seed_campaign(amqp_stack.db, 4000)
    workers = await ready(booting)
    await amqp_stack.start_campaign(campaign_id)
    row = await wait_for_status(amqp_stack.db, campaign_id, CampaignStatus.FINISHED, 120, workers)
    assert row.status_reason is None
    await assert_everyone_exactly_once(amqp_stack, campaign_id, emails)
    assert all(w.alive() for w in workers)


async def _sigkill_a_worker_on_rabbitmq(amqp_stack: AmqpStack) -> None:
    booting = amqp_stack.spawn_workers(2)
    campaign_id, emails = await seed_campaign(amqp_stack.db, 10_000)
    first, second = await ready(booting)
    await amqp_stack.start_campaign(campaign_id)
    await amqp_stack.sink.wait_until(lambda s: s.accepted_total >= 2000, within=60, what="2000 accepted")
    first.kill()
    await amqp_stack.workers(1)
    row = await wait_for_status(amqp_stack.db, campaign_id, CampaignStatus.FINISHED, 120, amqp_stack.started)
    assert row.status_reason is None
    assert max(await batch_attempts(amqp_stack.db, campaign_id)) >= 2
    # As on Redis: at most one message per SMTP connection of the killed worker never arrived, and what its
    # running batches had sent but not yet recorded (a group of results each) is in doubt.
    await assert_everyone_exactly_once(
        amqp_stack,
        campaign_id,
        emails,
        missing_bound=SMTP_POOL_SIZE,
        in_doubt_bound=WORKER_THREADS * 2 * REPORT_EVERY + SMTP_POOL_SIZE,
    )
    assert second.alive()


if AMQP_URL and PG_URL and REDIS_URL:
    # Collected only with RabbitMQ, PostgreSQL and Redis wanted (never skipped).
    test_campaign_through_two_workers = _campaign_through_two_workers
    test_sigkill_a_worker_on_rabbitmq = _sigkill_a_worker_on_rabbitmq
