"""Sending through senders: each campaign's (or transactional message's) mail goes out through its own
sender's provider only, deliveries remember the sender, a changed sender is rebuilt, and one that cannot
send pauses its campaign with the reason. On both databases, with real SMTP servers (aiosmtpd)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.app import sending_setup
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.senders import Sender, SenderType
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import optin, subscribers
from emailkit.domain.automation.entry import TrackedEvent, events_tracked
from emailkit.domain.runtime import Runtime, campaign_sender
from emailkit.domain.sealing import seal
from emailkit.domain.senders import store
from emailkit.domain.senders.routing import SenderProviders
from emailkit.domain.sending import deliveries, lifecycle
from emailkit.domain.sending.transactional import TransientSendFailure, send_transactional
from emailkit.providers.senders import SenderProviderFactory
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import insert_list
from tests.support.flows import FlowWorld, make_flow, make_template, send
from tests.support.smtp_provider import Sink, smtp_server

BODY = '<p>Hello {{ subscriber.name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'


def runtime_for(db: Database, tmp_path: Path) -> Runtime:
    """A process that sends through the outbox by default and can build senders' providers."""
    settings = Settings(
        database_url=db.url,  # type: ignore[arg-type]
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url="http://testserver",  # type: ignore[arg-type]
        provider="outbox",
        data_dir=tmp_path,
    )
    return Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        sending=sending_setup(settings),
        sender_factory=SenderProviderFactory(outbox_root=settings.outbox_dir),
    )


async def make_sender(runtime: Runtime, name: str, port: int) -> int:
    assert runtime.sender_factory is not None
    async with runtime.db.transaction() as s:
        row = await store.create_sender(
            s,
            store.SenderInput(
                name=name,
                type=SenderType.SMTP,
                settings={"url": f"smtp://127.0.0.1:{port}?tls=none"},
                pool_size=2,
            ),
            instance_secret=TEST_SECRET,
            build=runtime.sender_factory,
            allow_private=True,
        )
        return row.id


async def seed(
    db: Database, prefix: str, n: int, *, campaign_sender: int | None, list_sender: int | None
) -> tuple[int, list[str]]:
    """A list of n subscribers (with `list_sender` as its default) and a draft campaign to it."""
    emails = [f"{prefix}{i:03d}@example.org" for i in range(n)]
    async with db.transaction() as s:
        lst = MailingList(name=f"{prefix} readers", optin=OptIn.SINGLE, sender_id=list_sender)
        campaign = Campaign(
            name=f"{prefix} news",
            subject=f"{prefix}: hello {{{{ subscriber.name }}}}",
            from_email="news@example.com",
            body=BODY,
            format=ContentFormat.HTML,
            sender_id=campaign_sender,
        )
        s.add_all([lst, campaign])
        await s.flush()
        for e in emails:
            sub = Subscriber(email=e, name=e.split("@")[0], attributes={})
            s.add(sub)
            await s.flush()
            s.add(Subscription(subscriber_id=sub.id, list_id=lst.id, status=SubscriptionStatus.CONFIRMED))
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id, emails


async def run_campaign(runtime: Runtime, campaign_id: int) -> None:
    async with runtime.db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=7)
    sender = campaign_sender(runtime)
    for outcome in await asyncio.gather(*(sender.run_batch(b) for b in batch_ids)):
        assert outcome.claimed


async def ledger(db: Database, campaign_id: int) -> list[tuple[str, DeliveryStatus, int | None, str | None]]:
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery.email, Delivery.status, Delivery.sender_id, Delivery.provider)
            .where(Delivery.campaign_id == campaign_id)
            .order_by(Delivery.email)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def status_of(db: Database, campaign_id: int) -> tuple[CampaignStatus, str | None]:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row.status, row.status_reason


async def test_two_campaigns_at_once_each_through_its_own_smtp_sender(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    sink_a, sink_b = Sink(), Sink()
    try:
        async with smtp_server(sink_a) as port_a, smtp_server(sink_b) as port_b:
            brand_a = await make_sender(runtime, "Brand A", port_a)
            brand_b = await make_sender(runtime, "Brand B", port_b)
            # One names its sender itself; the other gets it from its list.
            first, first_emails = await seed(db, "a", 20, campaign_sender=brand_a, list_sender=None)
            second, second_emails = await seed(db, "b", 20, campaign_sender=None, list_sender=brand_b)
            await asyncio.gather(run_campaign(runtime, first), run_campaign(runtime, second))
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sorted(sink_a.recipients()) == first_emails
    assert sorted(sink_b.recipients()) == second_emails
    assert all(b"Subject: a: hello" in raw for _, _, raw in sink_a.delivered)
    assert all(b"Subject: b: hello" in raw for _, _, raw in sink_b.delivered)
    # The default sender (the outbox) sent nothing.
    assert not (tmp_path / "outbox").exists() or list((tmp_path / "outbox").iterdir()) == []
    assert await ledger(db, first) == [(e, DeliveryStatus.SENT, brand_a, "smtp") for e in first_emails]
    assert await ledger(db, second) == [(e, DeliveryStatus.SENT, brand_b, "smtp") for e in second_emails]
    assert (await status_of(db, first))[0] is CampaignStatus.FINISHED
    # One provider per sender in this process, each with its own connections.
    assert sink_a.connections <= 2 and sink_b.connections <= 2


async def test_a_campaign_without_a_sender_goes_through_the_default(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    campaign_id, emails = await seed(db, "d", 5, campaign_sender=None, list_sender=None)
    try:
        await run_campaign(runtime, campaign_id)
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert await ledger(db, campaign_id) == [(e, DeliveryStatus.SENT, None, "outbox") for e in emails]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 5


async def test_a_changed_sender_is_rebuilt_for_the_next_batch(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    old, new = Sink(), Sink()
    try:
        async with smtp_server(old) as old_port, smtp_server(new) as new_port:
            sender_id = await make_sender(runtime, "Relay", old_port)
            first, first_emails = await seed(db, "f", 4, campaign_sender=sender_id, list_sender=None)
            await run_campaign(runtime, first)
            providers = campaign_sender(runtime).senders
            built = providers._entries[sender_id].route.provider
            assert runtime.sender_factory is not None
            async with db.transaction() as s:
                await store.update_sender(
                    s,
                    sender_id,
                    store.SenderInput(settings={"url": f"smtp://127.0.0.1:{new_port}?tls=none"}),
                    instance_secret=TEST_SECRET,
                    build=runtime.sender_factory,
                    allow_private=True,
                )
            second, second_emails = await seed(db, "g", 4, campaign_sender=sender_id, list_sender=None)
            await run_campaign(runtime, second)
            rebuilt = providers._entries[sender_id].route.provider
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sorted(old.recipients()) == first_emails
    assert sorted(new.recipients()) == second_emails
    assert rebuilt is not built
    # The replaced provider was closed once no batch used it any more.
    assert getattr(built, "_pool") is None


async def test_a_sender_that_cannot_send_pauses_its_campaign(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    sink = Sink()
    async with smtp_server(sink) as port:
        sender_id = await make_sender(runtime, "Relay", port)
        # Credentials sealed under another EMAILKIT_SECRET_KEY: they no longer open.
        async with db.transaction() as s:
            row = await s.get(Sender, sender_id)
            assert row is not None
            row.credentials_sealed = seal(
                '{"username": "u", "password": "p"}', "another-key", purpose=store.PURPOSE
            )
        campaign_id, _ = await seed(db, "p", 3, campaign_sender=sender_id, list_sender=None)
        try:
            await run_campaign(runtime, campaign_id)
        finally:
            assert runtime.sending is not None
            await runtime.sending.close()
    status, reason = await status_of(db, campaign_id)
    assert status is CampaignStatus.PAUSED
    assert reason is not None and "Relay" in reason and "EMAILKIT_SECRET_KEY" in reason
    assert sink.delivered == []
    assert {st for _, st, _, _ in await ledger(db, campaign_id)} == {DeliveryStatus.QUEUED}


async def test_a_transactional_message_goes_through_the_sender_it_was_queued_with(
    db: Database, tmp_path: Path
) -> None:
    runtime = runtime_for(db, tmp_path)
    sink = Sink()
    sink.data_replies["retry@example.org"] = "451 4.3.0 try again later"
    try:
        async with smtp_server(sink) as port:
            sender_id = await make_sender(runtime, "Receipts", port)
            async with db.transaction() as s:
                template = Template(
                    name="Receipt", kind=TemplateKind.TRANSACTIONAL, format=ContentFormat.HTML,
                    subject="Your receipt", body="<p>Thanks</p>",
                )  # fmt: skip
                s.add(template)
                await s.flush()
                made: list[Any] = []
                for to in ("buyer@example.org", "retry@example.org"):
                    row, _ = await deliveries.create_transactional(
                        s, template_id=template.id, to=to, data={}, from_email="shop@example.com",
                        sender_id=sender_id,
                    )  # fmt: skip
                    made.append(row.id)
            sent = await send_transactional(runtime, made[0], max_attempts=3)
            assert sent is not None and sent.ok, sent
            # A transient refusal: retried later, through the same sender.
            with pytest.raises(TransientSendFailure, match="451"):
                await send_transactional(runtime, made[1], max_attempts=3)
            del sink.data_replies["retry@example.org"]
            again = await send_transactional(runtime, made[1], max_attempts=3)
            assert again is not None and again.ok, again
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sink.recipients() == ["buyer@example.org", "retry@example.org"]
    async with db.session() as s:
        rows = (await s.execute(select(Delivery.sender_id, Delivery.provider, Delivery.status))).all()
    assert [tuple(r) for r in rows] == [(sender_id, "smtp", DeliveryStatus.SENT)] * 2
    assert not (tmp_path / "outbox").exists() or list((tmp_path / "outbox").iterdir()) == []


async def test_a_flow_send_step_goes_through_its_sender(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    assert runtime.sender_factory is not None
    sink = Sink()
    async with smtp_server(sink) as port:
        sender_id = await make_sender(runtime, "Flows", port)
        lst = await insert_list(db, "Shop")
        thanks = await make_template(db, "<p>Thanks</p>", subject="Thanks")
        later = await make_template(db, "<p>Again</p>", subject="Again")
        await make_flow(
            db,
            {
                "trigger": {"type": "EVENT", "eventName": "order.completed"},
                "steps": [send("thanks", thanks, "again", senderId=sender_id), send("again", later)],
            },
        )
        async with db.transaction() as s:
            ada = await subscribers.create_subscriber(s, "ada@example.com", "Ada", {}, list_ids=[lst])
            await events_tracked(s, 1, [TrackedEvent(7, ada.id, "order.completed", {}, utcnow())])
        world = FlowWorld(db)
        step_sender = world.runner.sender
        assert step_sender is not None
        step_sender.senders = SenderProviders(
            db, TEST_SECRET, default=step_sender.senders.default, build=runtime.sender_factory
        )
        try:
            await world.settle()
        finally:
            await step_sender.senders.close()
    # The step naming the sender went through its SMTP server; the other one through the default provider.
    assert sink.recipients() == ["ada@example.com"]
    assert b"Subject: Thanks" in sink.delivered[0][2]
    assert world.sent_to() == {"ada@example.com": ["Again"]}
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery.sender_id, Delivery.provider, Delivery.status).order_by(Delivery.id)
        )
        assert [tuple(r) for r in rows.all()] == [
            (sender_id, "smtp", DeliveryStatus.SENT),
            (None, "keeping", DeliveryStatus.SENT),
        ]


async def test_a_double_opt_in_mail_goes_through_its_lists_sender(db: Database, tmp_path: Path) -> None:
    runtime = runtime_for(db, tmp_path)
    sink = Sink()
    try:
        async with smtp_server(sink) as port:
            sender_id = await make_sender(runtime, "Confirmations", port)
            async with db.transaction() as s:
                lst = MailingList(name="Weekly", optin=OptIn.DOUBLE, sender_id=sender_id)
                s.add(lst)
                await s.flush()
                person = await subscribers.create_subscriber(
                    s, "new@example.org", "New", {}, list_ids=[lst.id]
                )
                [delivery_id] = await optin.queue_confirmations(
                    s,
                    optin.sender_of("http://testserver", TEST_SECRET, ("hi@example.com", "")),
                    [person.id],
                    [lst.id],
                )
            sent = await send_transactional(runtime, delivery_id, max_attempts=3)
            assert sent is not None and sent.ok, sent
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert sink.recipients() == ["new@example.org"]
    async with db.session() as s:
        row = await s.get(Delivery, delivery_id)
        assert row is not None and (row.sender_id, row.provider) == (sender_id, "smtp")
