"""The send pipeline against a real provider (the outbox) and the real database."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignList,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.content.tracked_urls import PURPOSE_CLICK, TrackingUrls
from emailkit.domain.ports.provider import EmailProvider, OutgoingMessage, SendResult
from emailkit.domain.sending import deliveries, lifecycle
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.outbox import OutboxProvider

SECRET = "pipeline-test-secret-0123456789"
BODY = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ subscriber.name }} from {{ subscriber.attributes.city }}</mj-text>
<mj-button href="https://example.com/offer?x=1&y=2">Offer</mj-button>
<mj-text><a href="https://example.com/blog">Blog</a> <a href="mailto:help@example.com">Help</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
</mj-column></mj-section></mj-body></mjml>"""


class CountingProvider:
    """Wraps a real provider and counts what it was asked to send (to prove nobody is mailed twice)."""

    def __init__(self, inner: EmailProvider) -> None:
        self.inner = inner
        self.max_batch_size = inner.max_batch_size
        self.sent_to: list[str] = []

    async def send_batch(
        self, messages: Sequence[OutgoingMessage], *, on_commit=None, on_result=None
    ) -> list[SendResult]:  # type: ignore[no-untyped-def]
        results = await self.inner.send_batch(messages, on_commit=on_commit)
        self.sent_to.extend(m.recipient for m, r in zip(messages, results, strict=True) if r.ok)
        return results

    async def close(self) -> None:
        await self.inner.close()


async def seed(db: Database, n: int = 30) -> tuple[int, list[int]]:
    async with db.transaction() as s:
        lst = MailingList(name="News", optin=OptIn.SINGLE)
        other = MailingList(name="Other", optin=OptIn.DOUBLE)
        s.add_all([lst, other])
        await s.flush()
        ids = []
        for i in range(n):
            sub = Subscriber(
                email=f"user{i:03d}@example.com", name=f"User {i}", attributes={"city": "Berlin"}
            )
            if i == 3:
                sub.status = SubscriberStatus.BLOCKLISTED
            s.add(sub)
            await s.flush()
            ids.append(sub.id)
            status = SubscriptionStatus.UNSUBSCRIBED if i == 5 else SubscriptionStatus.CONFIRMED
            s.add(Subscription(subscriber_id=sub.id, list_id=lst.id, status=status))
        # Someone only unconfirmed on a double opt-in list that is also targeted.
        late = Subscriber(email="pending@example.com", name="Pending", attributes={})
        s.add(late)
        await s.flush()
        s.add(Subscription(subscriber_id=late.id, list_id=other.id, status=SubscriptionStatus.UNCONFIRMED))
        campaign = Campaign(
            name="November",
            subject="Hi {{ subscriber.name }}",
            from_email="news@example.com",
            from_name="News",
            body=BODY,
            format=ContentFormat.MJML,
        )
        s.add(campaign)
        await s.flush()
        s.add_all(
            [
                CampaignList(campaign_id=campaign.id, list_id=lst.id),
                CampaignList(campaign_id=campaign.id, list_id=other.id),
            ]
        )
        return campaign.id, ids


def make_sender(db: Database, provider: EmailProvider, **config: object) -> CampaignSender:
    urls = TrackingUrls("https://mail.example.com", TokenSigner(SECRET))
    return CampaignSender(db, provider, "outbox", urls, config=SendingConfig(**config))  # type: ignore[arg-type]


async def start(db: Database, campaign_id: int, batch_size: int = 10) -> list[int]:
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=batch_size)
    return batch_ids


async def statuses(db: Database, campaign_id: int) -> dict[str, int]:
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        )
        return {st.value: int(n) for st, n in rows}


async def campaign_row(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row


async def test_campaign_sends_each_recipient_once_and_finishes(db: Database, tmp_path: Path) -> None:
    campaign_id, _ = await seed(db)
    provider = CountingProvider(OutboxProvider(tmp_path))
    sender = make_sender(db, provider)
    batch_ids = await start(db, campaign_id)
    assert len(batch_ids) == 4  # 31 audience members in batches of 10

    for batch_id in batch_ids:
        outcome = await sender.run_batch(batch_id)
        assert outcome.claimed and outcome.done
    # A redelivered queue message finds the batch done and sends nothing.
    assert (await sender.run_batch(batch_ids[0])).claimed is False

    assert await statuses(db, campaign_id) == {"SENT": 28, "SKIPPED": 3}
    assert len(provider.sent_to) == 28 == len(set(provider.sent_to))
    assert "user003@example.com" not in provider.sent_to  # blocklisted
    assert "user005@example.com" not in provider.sent_to  # unsubscribed
    assert "pending@example.com" not in provider.sent_to  # unconfirmed on a double opt-in list
    row = await campaign_row(db, campaign_id)
    assert row.status is CampaignStatus.FINISHED and row.finished_at is not None
    assert (row.recipients_count, row.sent_count, row.failed_count, row.skipped_count) == (31, 28, 0, 3)
    async with db.session() as s:
        reasons = set(
            (
                await s.execute(select(Delivery.skip_reason).where(Delivery.status == DeliveryStatus.SKIPPED))
            ).scalars()
        )
    assert reasons == {"blocklisted", "unsubscribed", "unconfirmed"}


async def test_message_has_compliance_headers_tracking_and_personalisation(
    db: Database, tmp_path: Path
) -> None:
    campaign_id, _ = await seed(db, n=2)
    sender = make_sender(db, OutboxProvider(tmp_path))
    for batch_id in await start(db, campaign_id):
        await sender.run_batch(batch_id)
    async with db.session() as s:
        delivery = (
            await s.execute(select(Delivery).where(Delivery.email == "user000@example.com"))
        ).scalar_one()
    raw = (tmp_path / f"{delivery.id}.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Hi User 0"
    assert msg["X-Emailkit-Delivery"] == str(delivery.id)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<https://mail.example.com/u/")
    assert f"campaign-{campaign_id}.mail.example.com" in msg["List-Id"]
    assert msg["Message-ID"]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello User 0 from Berlin" in html and "Hello User 0 from Berlin" in text
    # Links are tracked with tokens that sign the original URL; mailto and unsubscribe stay as they are.
    assert "https://example.com/offer" not in html and "https://example.com/blog" not in html
    assert "mailto:help@example.com" in html
    assert msg["List-Unsubscribe"].strip("<>") in html
    signer = TokenSigner(SECRET)
    tokens = [part.split('"')[0] for part in html.split("https://mail.example.com/t/c/")[1:]]
    targets = {signer.verify(PURPOSE_CLICK, t)[1] for t in tokens}  # type: ignore[index]
    assert targets == {"https://example.com/offer?x=1&y=2", "https://example.com/blog"}
    assert "https://mail.example.com/t/o/" in html  # open pixel


async def test_in_doubt_rows_are_never_sent_again(db: Database, tmp_path: Path) -> None:
    campaign_id, ids = await seed(db, n=5)
    provider = CountingProvider(OutboxProvider(tmp_path))
    sender = make_sender(db, provider)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    # A worker died after committing SENDING for two recipients (they were handed to the provider).
    async with db.transaction() as s:
        batch = await s.get(CampaignBatch, batch_id)
        assert batch is not None
        await sender.ledger.materialise(s, batch)
        await s.execute(
            update(Delivery).where(Delivery.subscriber_id.in_(ids[:2])).values(status=DeliveryStatus.SENDING)
        )
    await sender.run_batch(batch_id)
    assert sorted(provider.sent_to) == [f"user{i:03d}@example.com" for i in (2, 4)]  # 3 is blocklisted
    row = await campaign_row(db, campaign_id)
    # In doubt: neither counted as sent nor sent again.
    assert (row.sent_count, row.in_doubt_count, row.status) == (2, 2, CampaignStatus.FINISHED)
    async with db.session() as s:
        doubtful = (
            await s.execute(
                select(Delivery.subscriber_id, Delivery.status, Delivery.last_error, Delivery.sent_at).where(
                    Delivery.subscriber_id.in_(ids[:2])
                )
            )
        ).all()
    assert {r.subscriber_id for r in doubtful} == set(ids[:2])
    assert all(r.status is DeliveryStatus.IN_DOUBT and r.sent_at is None for r in doubtful)
    assert all(r.last_error is not None and "outcome unknown" in r.last_error for r in doubtful)

    # Retrying failures leaves them alone; only the operator's explicit choice sends them again.
    async with db.transaction() as s:
        _, batches, count = await deliveries.retry_failed_deliveries(s, campaign_id)
    assert (batches, count) == ([], 0)
    async with db.transaction() as s:
        campaign, batches, count = await deliveries.retry_failed_deliveries(
            s, campaign_id, include_in_doubt=True
        )
        assert (campaign.status, campaign.in_doubt_count, count) == (CampaignStatus.RUNNING, 0, 2)
    assert batches == [batch_id]
    await sender.run_batch(batch_id)
    assert sorted(provider.sent_to) == [f"user{i:03d}@example.com" for i in (0, 1, 2, 4)]
    row = await campaign_row(db, campaign_id)
    assert (row.sent_count, row.in_doubt_count, row.status) == (4, 0, CampaignStatus.FINISHED)


async def test_paused_campaign_releases_its_batch_and_resume_continues(db: Database, tmp_path: Path) -> None:
    campaign_id, _ = await seed(db, n=10)
    provider = CountingProvider(OutboxProvider(tmp_path))
    sender = make_sender(db, provider, chunk_size=3)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    async with db.transaction() as s:
        await lifecycle.pause_campaign(s, campaign_id)
    assert (await sender.run_batch(batch_id)).claimed is False
    assert provider.sent_to == []
    async with db.transaction() as s:
        _, again = await lifecycle.resume_campaign(s, campaign_id)
    assert again == [batch_id]
    assert (await sender.run_batch(batch_id)).done
    assert len(provider.sent_to) == 8


class FailingProvider:
    """A real outbox that a permanent policy rejects for some recipients (like an SMTP 550 per address)."""

    max_batch_size = 100

    def __init__(self, inner: EmailProvider, reject: set[str], transient: set[str] | None = None) -> None:
        self.inner = inner
        self.reject = reject
        self.transient = transient or set()

    async def send_batch(
        self, messages: Sequence[OutgoingMessage], *, on_commit=None, on_result=None
    ) -> list[SendResult]:  # type: ignore[no-untyped-def]
        ok = [m for m in messages if m.recipient not in self.reject | self.transient]
        sent = iter(await self.inner.send_batch(ok, on_commit=on_commit))
        out = []
        for m in messages:
            if m.recipient in self.reject:
                out.append(SendResult.failed(m.delivery_id, "550 5.1.1 no such user", transient=False))
            elif m.recipient in self.transient:
                out.append(
                    SendResult.failed(m.delivery_id, "451 4.3.0 try later", transient=True, retry_after=1)
                )
            else:
                out.append(next(sent))
        return out

    async def close(self) -> None:
        await self.inner.close()


async def test_permanent_and_transient_failures_are_recorded_and_retried(
    db: Database, tmp_path: Path
) -> None:
    campaign_id, _ = await seed(db, n=10)
    provider = FailingProvider(OutboxProvider(tmp_path), {"user001@example.com"}, {"user002@example.com"})
    sender = make_sender(db, provider)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    outcome = await sender.run_batch(batch_id)
    assert outcome.retry_after == 1 and not outcome.done
    async with db.session() as s:
        rows = {d.email: d for d in (await s.execute(select(Delivery))).scalars()}
    assert rows["user001@example.com"].status is DeliveryStatus.FAILED
    assert rows["user001@example.com"].last_error == "550 5.1.1 no such user"
    assert rows["user002@example.com"].status is DeliveryStatus.QUEUED
    assert rows["user002@example.com"].attempts == 1
    assert (await campaign_row(db, campaign_id)).status is CampaignStatus.RUNNING

    provider.transient.clear()  # the server recovered
    outcome = await sender.run_batch(batch_id)
    assert outcome.done and outcome.sent == 1
    row = await campaign_row(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FINISHED, 7, 1)


async def test_error_budget_pauses_the_campaign_with_a_reason(db: Database, tmp_path: Path) -> None:
    campaign_id, _ = await seed(db, n=30)
    everyone = {f"user{i:03d}@example.com" for i in range(30)}
    provider = FailingProvider(OutboxProvider(tmp_path), everyone)
    sender = make_sender(db, provider, chunk_size=5, error_budget_min_sample=5, error_budget_ratio=0.5)
    for batch_id in await start(db, campaign_id, batch_size=100):
        await sender.run_batch(batch_id)
    row = await campaign_row(db, campaign_id)
    assert row.status is CampaignStatus.PAUSED
    assert row.status_reason is not None and "error budget" in row.status_reason
    assert row.failed_count < 28  # it stopped early
    async with db.session() as s:
        batch = (await s.execute(select(CampaignBatch))).scalar_one()
    assert batch.status is BatchStatus.PENDING


@pytest.mark.parametrize("bad", ["{{ subscriber.name.__class__ }}"])
async def test_content_that_no_longer_compiles_fails_the_campaign(
    db: Database, tmp_path: Path, bad: str
) -> None:
    campaign_id, _ = await seed(db, n=2)
    async with db.transaction() as s:
        await s.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(body=bad, format=ContentFormat.HTML)
        )
    sender = make_sender(db, OutboxProvider(tmp_path))
    for batch_id in await start(db, campaign_id):
        await sender.run_batch(batch_id)
    row = await campaign_row(db, campaign_id)
    assert row.status is CampaignStatus.FAILED
    assert row.status_reason is not None and "could not be compiled" in row.status_reason
    assert list(tmp_path.iterdir()) == []


async def test_retry_failed_deliveries_sends_only_the_failed_ones(db: Database, tmp_path: Path) -> None:
    from emailkit.domain.sending.deliveries import retry_failed_deliveries

    campaign_id, _ = await seed(db, n=6)
    provider = FailingProvider(OutboxProvider(tmp_path), {"user001@example.com", "user002@example.com"})
    sender = make_sender(db, provider)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    await sender.run_batch(batch_id)
    row = await campaign_row(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FINISHED, 2, 2)

    provider.reject.clear()
    counting = CountingProvider(provider)
    sender = make_sender(db, counting)
    async with db.transaction() as s:
        campaign, batch_ids, count = await retry_failed_deliveries(s, campaign_id)
    assert (campaign.status, count, batch_ids) == (CampaignStatus.RUNNING, 2, [batch_id])
    await sender.run_batch(batch_id)
    assert sorted(counting.sent_to) == ["user001@example.com", "user002@example.com"]
    row = await campaign_row(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FINISHED, 4, 0)
