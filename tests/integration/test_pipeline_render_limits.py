"""A recipient whose data makes the template go over a render limit fails alone; the campaign finishes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.runtime import Runtime, SendingSetup
from emailkit.domain.sending.transactional import send_transactional
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import SECRET, CountingProvider, campaign_row, make_sender, seed, start

# The loop length comes from a subscriber attribute: harmless for everyone but the one with rows=5000.
BODY = (
    "<p>Hello {{ subscriber.name }}</p>"
    "<p>{% for i in range(subscriber.attributes.rows | default(1)) %}{% for j in range(100) %}.{% endfor %}"
    "{% endfor %}</p>"
)


async def test_one_recipient_over_the_limit_fails_with_the_reason_and_the_others_are_sent(
    db: Database, tmp_path: Path
) -> None:
    campaign_id, ids = await seed(db, n=12)
    async with db.transaction() as s:
        await s.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(body=BODY, format=ContentFormat.HTML)
        )
        await s.execute(update(Subscriber).where(Subscriber.id == ids[7]).values(attributes={"rows": 5000}))
    provider = CountingProvider(OutboxProvider(tmp_path))
    sender = make_sender(db, provider, chunk_size=5)
    for batch_id in await start(db, campaign_id, batch_size=100):
        outcome = await sender.run_batch(batch_id)
        assert outcome.done
    async with db.session() as s:
        rows = {d.email: d for d in (await s.execute(select(Delivery))).scalars()}
    bomb = rows["user007@example.com"]
    assert bomb.status is DeliveryStatus.FAILED
    assert bomb.last_error is not None and bomb.last_error.startswith("TEMPLATE_LIMIT in body: Line 1: ")
    assert "iterations" in bomb.last_error
    sent = sorted(e for e, d in rows.items() if d.status is DeliveryStatus.SENT)
    # Everyone else who may be mailed (not the blocklisted user003, nor the unsubscribed user005) got it.
    expected = sorted(f"user{i:03d}@example.com" for i in range(12) if i not in (3, 5, 7))
    assert sent == expected == sorted(provider.sent_to)
    row = await campaign_row(db, campaign_id)
    assert (row.status, row.sent_count, row.failed_count) == (CampaignStatus.FINISHED, len(expected), 1)
    message = next(tmp_path.glob("*.eml")).read_text()
    assert "." * 100 in message


async def test_a_transactional_delivery_over_the_limit_fails_without_a_retry(
    db: Database, tmp_path: Path
) -> None:
    # The data passed the API's check against an earlier version of the template; the template changed since.
    async with db.transaction() as s:
        template = Template(
            name="Receipt",
            kind=TemplateKind.TRANSACTIONAL,
            format=ContentFormat.HTML,
            subject="Receipt",
            body=BODY,
        )
        s.add(template)
        await s.flush()
        delivery = Delivery(
            campaign_id=None,
            email="ada@example.com",
            template_id=template.id,
            data={"vars": {}, "from_email": "shop@example.com", "from_name": "Shop"},
            status=DeliveryStatus.QUEUED,
        )
        s.add(delivery)
        await s.flush()
        delivery_id = delivery.id
    outbox = OutboxProvider(tmp_path)
    runtime = Runtime(
        db=db,
        secret_key=SECRET,
        public_url="https://mail.example.com",
        sending=SendingSetup(provider_name="outbox", provider_factory=lambda: outbox),
    )
    async with db.transaction() as s:
        await s.execute(update(Template).values(body=BODY.replace("subscriber.attributes.rows", "5000")))
    result = await send_transactional(runtime, delivery_id, max_attempts=5)
    assert result is not None and not result.ok and not result.transient
    async with db.session() as s:
        row = await s.get(Delivery, delivery_id)
    assert row is not None and row.status is DeliveryStatus.FAILED and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("TEMPLATE_LIMIT in body: ")
    assert list(tmp_path.iterdir()) == []
