"""Failed sends say why: grouped reasons in the worker log, and FAILED with a reason when nobody was sent.

Against real SMTP peers: an aiosmtpd server that refuses chosen recipients, and a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.ports.provider import SendResult
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.deliveries import retry_failed_deliveries
from emailkit.domain.sending.failures import FailureLog, reason_key
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.sending.pipeline import BatchOutcome, CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.smtp import SmtpProvider, parse_smtp_url
from tests.support.audience import address, seed_campaign

PIPELINE_LOG = "emailkit.domain.sending.pipeline"


class Refusing:
    """aiosmtpd handler: RCPT replies per address (everyone else is accepted)."""

    def __init__(self) -> None:
        self.rcpt_replies: dict[str, str] = {}
        self.delivered: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, addr: str, options: list[str]
    ) -> str:
        if addr in self.rcpt_replies:
            return self.rcpt_replies[addr]
        envelope.rcpt_tos.append(addr)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


@asynccontextmanager
async def aiosmtpd_server(handler: Refusing) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="localhost", loop=loop), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A port that refuses connections: bound once, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def smtp_sender(db: Database, port: int, **config: object) -> AsyncIterator[CampaignSender]:
    provider = SmtpProvider(parse_smtp_url(f"smtp://127.0.0.1:{port}?tls=none&timeout=5"), pool_size=2)
    urls = TrackingUrls("https://mail.example.com", TokenSigner("failures-test-secret-0123456789"))
    try:
        yield CampaignSender(db, provider, "smtp", urls, config=SendingConfig(**config))  # type: ignore[arg-type]
    finally:
        await provider.close()


async def run_to_the_end(sender: CampaignSender, batch_ids: list[int]) -> list[BatchOutcome]:
    """Run every batch until none is left to retry (the retries' backoff is configured to be tiny)."""
    outcomes = []
    todo = list(batch_ids)
    while todo:
        batch_id = todo.pop(0)
        outcome = await sender.run_batch(batch_id)
        outcomes.append(outcome)
        if outcome.retry_after is not None:
            await asyncio.sleep(outcome.retry_after)
            todo.append(batch_id)
    return outcomes


async def start(db: Database, campaign_id: int, batch_size: int) -> list[int]:
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=batch_size)
    return batch_ids


async def campaign(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row


def pipeline_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG]


def test_at_most_ten_reasons_are_logged_per_batch() -> None:
    log = FailureLog()
    results = [SendResult.failed(str(i), f"5{i:02d} reason {i}", transient=False) for i in range(1, 14)]
    recipients = {i: Pending(i, i, f"r{i}@example.com", "", {}, 0) for i in range(1, 14)}
    log.add(results, recipients, retried=[13])
    lines = log.lines(7, retry_after=3.0)
    assert len(lines) == 11
    assert lines[-1] == "batch 7: 3 more failed or retried attempts with 3 other reasons"
    assert "batch 7: 1 recipient failed: 501 reason 1 (e.g. r1@example.com)" in lines


def test_reason_key_masks_what_varies_per_recipient() -> None:
    a = reason_key("550 5.1.1 <ada@example.com>: Recipient address rejected: User unknown")
    b = reason_key("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown")
    assert a == b == "550 5.1.1 <<address>>: Recipient address rejected: User unknown"
    assert reason_key("451 queue 1234567 full") == reason_key("451 queue 7654321 full")
    assert reason_key("550 no such user") != reason_key("552 mailbox full")


async def test_failed_and_retried_attempts_are_logged_once_per_reason(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    campaign_id, emails = await seed_campaign(db, 30)
    handler = Refusing()
    unknown = emails[:12]
    greylisted = emails[12:16]
    for e in unknown:
        handler.rcpt_replies[e] = f"550 5.1.1 <{e}>: Recipient address rejected: User unknown"
    for e in greylisted:
        handler.rcpt_replies[e] = "451 4.7.1 Greylisted, please try again later"
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    async with aiosmtpd_server(handler) as port, smtp_sender(db, port, chunk_size=7) as sender:
        [batch_id] = await start(db, campaign_id, batch_size=100)
        outcome = await sender.run_batch(batch_id)

    assert (outcome.sent, outcome.failed) == (14, 12)
    assert outcome.retry_after is not None
    lines = pipeline_lines(caplog)
    # One line per reason for the whole batch (it ran in 5 chunks), never one per recipient.
    assert len(lines) == 2, lines
    failed, retried = lines
    assert failed.startswith(f"batch {batch_id}: 12 recipients failed: 550 5.1.1 <")
    assert "Recipient address rejected: User unknown (e.g. " in failed
    assert f"(e.g. {unknown[0]})" in failed
    assert retried.startswith(
        f"batch {batch_id}: 4 recipients will be retried in {outcome.retry_after:.1f}s: "
        "451 4.7.1 Greylisted, please try again later (e.g. "
    )
    assert all(e not in "\n".join(lines) for e in unknown[1:])
    row = await campaign(db, campaign_id)
    assert row.status is CampaignStatus.RUNNING


async def test_small_campaign_whose_every_recipient_is_refused_ends_failed_with_the_reason(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    campaign_id, emails = await seed_campaign(db, 4)
    handler = Refusing()
    handler.rcpt_replies.update(dict.fromkeys(emails, "550 5.7.1 Relaying denied"))
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    # 4 recipients: far under the error budget's minimum sample of 50.
    async with aiosmtpd_server(handler) as port, smtp_sender(db, port) as sender:
        outcomes = await run_to_the_end(sender, await start(db, campaign_id, batch_size=100))

    row = await campaign(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FAILED, 0, 4)
    assert (
        row.status_reason == "All 4 attempted recipients failed; the provider said: 550 5.7.1 Relaying denied"
    )
    assert row.finished_at is not None
    assert outcomes[-1].campaign_finished
    assert handler.delivered == []
    lines = pipeline_lines(caplog)
    assert any(
        line.endswith(f"4 recipients failed: 550 5.7.1 Relaying denied (e.g. {emails[0]})") for line in lines
    )
    assert lines[-1] == f"campaign {campaign_id}: every attempted recipient failed; marked FAILED"

    # Once the cause is fixed the failed recipients can be sent after all.
    handler.rcpt_replies.clear()
    async with db.transaction() as s:
        reopened, batch_ids, count = await retry_failed_deliveries(s, campaign_id)
    assert (reopened.status, count) == (CampaignStatus.RUNNING, 4)
    async with aiosmtpd_server(handler) as port, smtp_sender(db, port) as sender:
        await run_to_the_end(sender, batch_ids)
    row = await campaign(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count, row.status_reason) == (
        CampaignStatus.FINISHED,
        4,
        0,
        None,
    )
    assert sorted(handler.delivered) == sorted(emails)


async def test_campaign_with_the_smtp_server_down_ends_failed_with_the_connection_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    campaign_id, _ = await seed_campaign(db, 4)
    caplog.set_level(logging.INFO, logger=PIPELINE_LOG)
    port = closed_port()
    async with smtp_sender(
        db, port, max_attempts=2, retry_base_seconds=0.01, retry_max_seconds=0.05
    ) as sender:
        await run_to_the_end(sender, await start(db, campaign_id, batch_size=100))

    row = await campaign(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FAILED, 0, 4)
    assert row.status_reason is not None
    assert row.status_reason.startswith(
        "All 4 attempted recipients failed; the provider said: gave up after 2"
    )
    async with db.session() as s:
        errors = set(
            (
                await s.execute(select(Delivery.last_error).where(Delivery.status == DeliveryStatus.FAILED))
            ).scalars()
        )
    [error] = errors
    assert row.status_reason.endswith(error)
    # The first run's retry and the second run's failure both say why, once each for the batch.
    lines = pipeline_lines(caplog)
    retried = [line for line in lines if "will be retried" in line]
    failed = [line for line in lines if "recipients failed (no attempts left): " in line]
    assert len(retried) == 1 and len(failed) == 1, lines
    cause = error.removeprefix("gave up after 2 attempts: ")
    assert cause and cause in retried[0] and cause in failed[0]
    assert f"(e.g. {address(0)})" in retried[0]


async def test_a_campaign_with_some_recipients_sent_still_finishes(db: Database) -> None:
    campaign_id, emails = await seed_campaign(db, 4)
    handler = Refusing()
    handler.rcpt_replies.update(dict.fromkeys(emails[1:], "550 5.1.1 User unknown"))
    async with aiosmtpd_server(handler) as port, smtp_sender(db, port) as sender:
        await run_to_the_end(sender, await start(db, campaign_id, batch_size=100))
    row = await campaign(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count, row.status_reason) == (
        CampaignStatus.FINISHED,
        1,
        3,
        None,
    )


async def test_a_campaign_paused_by_the_error_budget_says_what_the_provider_said(db: Database) -> None:
    campaign_id, emails = await seed_campaign(db, 60)
    handler = Refusing()
    for e in emails:
        handler.rcpt_replies[e] = f"550 5.1.1 <{e}>: Recipient address rejected: User unknown"
    async with aiosmtpd_server(handler) as port, smtp_sender(db, port, chunk_size=10) as sender:
        await run_to_the_end(sender, await start(db, campaign_id, batch_size=100))
    row = await campaign(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.PAUSED, 0, 50)
    assert row.status_reason == (
        "Paused automatically: 50 of 50 recipients failed (error budget 25%); check the failed deliveries, fix "
        f"the cause, then resume. The provider said: 550 5.1.1 <{emails[0]}>: Recipient address rejected: "
        "User unknown"
    )
