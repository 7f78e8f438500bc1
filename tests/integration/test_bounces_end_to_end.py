"""End to end with EMAILKIT_BOUNCE_DOMAIN set: a campaign goes out through the smtp provider to an SMTP peer
(aiosmtpd), which sees each message's VERP envelope sender; a DSN built for one of them, fed to the bounce server,
suppresses that address, and mail to another message's List-Unsubscribe mailto: unsubscribes its recipient."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from emailkit.app import sending_setup
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
from emailkit.db.tables.sending import Campaign, CampaignList, Delivery, DeliveryStatus
from emailkit.domain.audience.suppressions import is_suppressed
from emailkit.domain.runtime import Runtime, campaign_sender
from emailkit.domain.sending import lifecycle, transactional
from emailkit.domain.verp import VerpAddress, VerpKind
from emailkit.settings import Settings
from tests.support.bounces import BOUNCE_DOMAIN, bounce_server, dsn, plain_mail, return_paths
from tests.support.environment import TEST_SECRET
from tests.support.smtp_provider import Sink, parsed, smtp_server
from tests.support.transactional import outbox_runtime, receipts

PEOPLE = ["ada@example.net", "bob@example.net", "cy@example.net"]
_MAILTO = re.compile(r"<mailto:([^?>]+)\?subject=unsubscribe>")


async def seed(db: Database) -> tuple[int, dict[str, int]]:
    async with db.transaction() as s:
        news = MailingList(name="News", optin=OptIn.SINGLE)
        s.add(news)
        await s.flush()
        subscribers = {}
        for email in PEOPLE:
            sub = Subscriber(email=email, name=email.split("@")[0].title())
            s.add(sub)
            await s.flush()
            subscribers[email] = sub.id
            s.add(Subscription(subscriber_id=sub.id, list_id=news.id, status=SubscriptionStatus.CONFIRMED))
        campaign = Campaign(
            name="December",
            subject="Hello {{ subscriber.name }}",
            from_email="news@example.org",
            from_name="News",
            body='<p>Hi {{ subscriber.name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
            format=ContentFormat.HTML,
        )
        s.add(campaign)
        await s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=news.id))
        return campaign.id, subscribers


async def test_a_campaign_with_verp_bounces_back_into_suppression(db: Database) -> None:
    campaign_id, subscribers = await seed(db)
    sink = Sink()
    async with smtp_server(sink) as port:
        # Wired as `emailkit worker` wires it, from the settings: EMAILKIT_PROVIDER=smtp, EMAILKIT_BOUNCE_DOMAIN.
        settings = Settings(
            database_url=db.url,
            secret_key=TEST_SECRET,  # type: ignore[arg-type]
            public_url="https://mail.example.org",
            provider="smtp",
            smtp_url=f"smtp://127.0.0.1:{port}?tls=none",  # type: ignore[arg-type]
            bounce_domain=BOUNCE_DOMAIN,
        )
        runtime = Runtime(
            db=db, secret_key=TEST_SECRET, public_url=settings.public_url, sending=sending_setup(settings)
        )
        assert runtime.sending is not None
        try:
            async with db.transaction() as s:
                _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=10)
            for batch_id in batch_ids:
                assert (await campaign_sender(runtime).run_batch(batch_id)).done
        finally:
            await runtime.sending.close()
    async with db.session() as s:
        deliveries = {
            d.email: d
            for d in (await s.execute(select(Delivery).where(Delivery.campaign_id == campaign_id))).scalars()
        }
    assert {e: d.status for e, d in deliveries.items()} == dict.fromkeys(PEOPLE, DeliveryStatus.SENT)

    # The peer saw each message from its own delivery's bounce address, and a List-Unsubscribe mailto: there.
    paths = return_paths()
    assert len(sink.delivered) == len(PEOPLE)
    mailtos: dict[str, str] = {}
    for mail_from, rcpt, raw in sink.delivered:
        delivery = deliveries[rcpt]
        assert mail_from == paths.bounce(delivery.id)
        assert paths.read(mail_from) == VerpAddress(VerpKind.BOUNCE, delivery.id)
        message = parsed(raw)
        assert message["From"].addresses[0].addr_spec == "news@example.org"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        header = str(message["List-Unsubscribe"])
        assert header.startswith("<https://mail.example.org/u/")
        [mailto] = _MAILTO.findall(header)
        assert paths.read(mailto) == VerpAddress(VerpKind.UNSUBSCRIBE, delivery.id)
        mailtos[rcpt] = mailto

    # What Ada's mailbox provider would send back to the envelope sender, and Bob pressing "unsubscribe".
    ada, bob = PEOPLE[0], PEOPLE[1]
    async with bounce_server(db) as server:
        await server.send(paths.bounce(deliveries[ada].id), dsn(ada))
        await server.send(mailtos[bob], plain_mail("unsubscribe"), mail_from=bob)
    async with db.session() as s:
        assert await is_suppressed(s, ada)
        assert not await is_suppressed(s, bob) and not await is_suppressed(s, PEOPLE[2])
        rows = await s.execute(
            select(Subscriber.email, Subscriber.status, Subscription.status).join(
                Subscription, Subscription.subscriber_id == Subscriber.id
            )
        )
        statuses = {email: (person, subscription) for email, person, subscription in rows}
    assert statuses == {
        ada: (SubscriberStatus.BLOCKLISTED, SubscriptionStatus.UNSUBSCRIBED),
        bob: (SubscriberStatus.ENABLED, SubscriptionStatus.UNSUBSCRIBED),
        PEOPLE[2]: (SubscriberStatus.ENABLED, SubscriptionStatus.CONFIRMED),
    }
    assert set(subscribers) == set(PEOPLE)


async def test_transactional_mail_goes_out_from_its_bounce_address_too(db: Database, tmp_path: Path) -> None:
    """EMAILKIT_BOUNCE_DOMAIN reaches every sender through the settings; the outbox writes the Return-Path."""
    runtime = outbox_runtime(db, tmp_path, bounce_domain="Bounces.Example.COM")
    [receipt] = await receipts(db, [DeliveryStatus.QUEUED])
    try:
        result = await transactional.send_transactional(runtime, receipt, max_attempts=3)
    finally:
        assert runtime.sending is not None
        await runtime.sending.close()
    assert result is not None and result.ok
    message = parsed((tmp_path / "outbox" / f"{receipt}.eml").read_bytes())
    assert message["Return-Path"] == f"<{return_paths().bounce(receipt)}>"
    assert message["From"].addresses[0].addr_spec == "shop@example.com"
