"""`emailkit bounce-server` on a free port, driven over SMTP with aiosmtplib: reports to VERP addresses recorded
through the feedback recorder (dedupe, soft-bounce policy, suppression, complaints), the mailto: unsubscribe,
and everything else refused at RCPT. On SQLite and PostgreSQL (under row-level security there)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.feedback import BounceType, Event, EventType
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.feedback import FeedbackPolicy
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths, VerpKind
from emailkit.inbound.server import tls_context
from tests.integration.test_provider_smtp_security_and_url import self_signed
from tests.support.bounces import BOUNCE_DOMAIN, arf, bounce_server, dsn, plain_mail, return_paths
from tests.support.feedback import Seeded, add_workspace, seed_sent_campaign, stats

A, B = "ada@example.net", "bob@example.net"


async def all_events(db: Database) -> list[Event]:
    with all_workspaces():
        async with db.session() as s:
            return list((await s.execute(select(Event).order_by(Event.id))).scalars())


async def suppressions(db: Database) -> list[tuple[int, str, SuppressionReason, str]]:
    with all_workspaces():
        async with db.session() as s:
            rows = await s.execute(
                select(Suppression.workspace_id, Suppression.email, Suppression.reason, Suppression.source)
            )
            return sorted((w, e, r, src) for w, e, r, src in rows)


async def subscriber_status(db: Database, subscriber_id: int) -> SubscriberStatus:
    with all_workspaces():
        async with db.session() as s:
            row = await s.get(Subscriber, subscriber_id)
            assert row is not None
            return row.status


async def subscriptions(db: Database, subscriber_id: int) -> dict[int, SubscriptionStatus]:
    with all_workspaces():
        async with db.session() as s:
            rows = await s.execute(
                select(Subscription.list_id, Subscription.status).where(
                    Subscription.subscriber_id == subscriber_id
                )
            )
            return {list_id: status for list_id, status in rows}


async def test_a_dsn_to_the_bounce_address_records_a_hard_bounce_and_suppresses(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A, B], provider="smtp")
    delivery = seeded.deliveries[A]
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(delivery), dsn(A))
    [event] = await all_events(db)
    assert (event.type, event.bounce_type, event.email) == (EventType.BOUNCE, BounceType.HARD, A)
    assert (event.delivery_id, event.campaign_id, event.subscriber_id) == (
        delivery,
        seeded.campaign_id,
        seeded.subscribers[A],
    )
    assert event.provider == "smtp" and event.reason is not None and event.reason.startswith("5.1.1")
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.HARD_BOUNCE, "smtp")]
    assert await subscriber_status(db, seeded.subscribers[A]) is SubscriberStatus.BLOCKLISTED
    assert await subscriber_status(db, seeded.subscribers[B]) is SubscriberStatus.ENABLED
    assert await stats(db, seeded.campaign_id) == {"bounced": 1}


async def test_starttls_is_offered_when_configured(db: Database, tmp_path: Path) -> None:
    _, cert = self_signed(tmp_path)
    seeded = await seed_sent_campaign(db, [A])
    async with bounce_server(db, tls=tls_context(str(cert), str(tmp_path / "key.pem"))) as server:
        await server.send(
            return_paths().bounce(seeded.deliveries[A]), dsn(A), start_tls=True, cert_bundle=str(cert)
        )
    [event] = await all_events(db)
    assert (event.type, event.email) == (EventType.BOUNCE, A)


async def test_the_token_decides_even_when_the_report_names_another_address(db: Database) -> None:
    """A forwarding address bounced: the person we mailed is who the delivery says, not the report."""
    seeded = await seed_sent_campaign(db, [A])
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(seeded.deliveries[A]), dsn("ada.forward@elsewhere.example"))
    [event] = await all_events(db)
    assert (event.email, event.delivery_id) == (A, seeded.deliveries[A])
    assert [e for _, e, _, _ in await suppressions(db)] == [A]


async def test_a_report_delivered_twice_is_recorded_once(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    report = dsn(A)
    async with bounce_server(db) as server:
        address = return_paths().bounce(seeded.deliveries[A])
        await server.send(address, report)
        await server.send(address.upper(), report)  # retried by an MTA that folds case
        assert [o.recorded for o in server.handler.outcomes] == [1, 0]
    assert len(await all_events(db)) == 1
    assert await stats(db, seeded.campaign_id) == {"bounced": 1}


async def test_soft_bounces_count_toward_the_soft_bounce_policy(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    policy = FeedbackPolicy(soft_bounce_limit=3, soft_bounce_window=timedelta(days=7))
    address = return_paths().bounce(seeded.deliveries[A])
    soft = "smtp; 452 4.2.2 Mailbox full"
    async with bounce_server(db, policy=policy) as server:
        for _ in range(2):
            await server.send(address, dsn(A, status="4.2.2", diagnostic=soft))
        assert await suppressions(db) == []
        await server.send(address, dsn(A, status="4.2.2", diagnostic=soft))
    events = await all_events(db)
    assert [(e.type, e.bounce_type) for e in events] == [(EventType.BOUNCE, BounceType.SOFT)] * 3
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.SOFT_BOUNCE, "smtp")]


async def test_a_delay_warning_is_deferred_not_a_bounce(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    async with bounce_server(db) as server:
        await server.send(
            return_paths().bounce(seeded.deliveries[A]), dsn(A, status="4.4.7", action="delayed")
        )
    [event] = await all_events(db)
    assert (event.type, event.bounce_type) == (EventType.DEFERRED, None)
    assert await suppressions(db) == []


async def test_an_arf_complaint_records_a_complaint(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A, B])
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(seeded.deliveries[B]), arf(B))
    [event] = await all_events(db)
    assert (event.type, event.email, event.delivery_id) == (EventType.COMPLAINT, B, seeded.deliveries[B])
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, B, SuppressionReason.COMPLAINT, "smtp")]
    assert await stats(db, seeded.campaign_id) == {"complained": 1}


async def test_a_redacted_complaint_is_tied_by_its_verp_address(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(seeded.deliveries[A]), arf("redacted@isp.example"))
    [event] = await all_events(db)
    assert (event.type, event.email) == (EventType.COMPLAINT, A)


@pytest.mark.parametrize(
    "rcpt",
    [
        "postmaster@bounces.example.com",
        "someone@gmail.com",  # relaying
        "bounce+aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.example.com",  # well-formed, not signed by us
        "bounce@bounces.example.com",
    ],
)
async def test_anything_but_our_signed_addresses_is_refused_at_rcpt(db: Database, rcpt: str) -> None:
    async with bounce_server(db) as server:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await server.send(rcpt, dsn(A))
    [(code, message)] = [(r.code, r.message) for r in refused.value.recipients]
    assert code == 550 and message.startswith("5.1.1")
    assert await all_events(db) == []


async def test_forged_tampered_and_foreign_tokens_are_refused(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    good = return_paths().bounce(seeded.deliveries[A])
    local, _, _ = good.partition("@")
    last = "b" if local[-1] == "a" else "a"
    forged = [
        f"{local[:-1]}{last}@{BOUNCE_DOMAIN}",
        f"{local}@example.org",
        ReturnPaths(TokenSigner("another-deployment-secret-0123456"), BOUNCE_DOMAIN).bounce(
            seeded.deliveries[A]
        ),
        f"unsubscribe+{return_paths().token(VerpKind.BOUNCE, seeded.deliveries[A])}@{BOUNCE_DOMAIN}",
    ]
    async with bounce_server(db) as server:
        for rcpt in forged:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await server.send(rcpt, dsn(A))
        # One good recipient among bad ones: only the bad one is refused, the report still lands.
        errors = await server.send([forged[0], good], dsn(A))
        assert [r.code for r in errors.values()] == [550]
    assert len(await all_events(db)) == 1


async def test_mail_that_is_no_report_is_accepted_and_dropped(db: Database) -> None:
    """Refusing after DATA would send it back to its (often null) sender; nothing about it is kept."""
    seeded = await seed_sent_campaign(db, [A])
    async with bounce_server(db) as server:
        await server.send(
            return_paths().bounce(seeded.deliveries[A]), plain_mail(), mail_from="kim@example.net"
        )
        # Even text that heuristics could read as a bounce of someone else.
        other = b"Subject: failure\r\n\r\n<stranger@example.org>: user unknown\r\n"
        await server.send(return_paths().bounce(seeded.deliveries[A]), other)
        assert [o.ignored for o in server.handler.outcomes] == [1, 1]
    assert await all_events(db) == []
    assert await suppressions(db) == []


async def test_a_token_whose_delivery_is_gone_is_accepted_and_ignored(db: Database) -> None:
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(987_654), dsn(A))
        await server.send(return_paths().unsubscribe(987_654), plain_mail("unsubscribe"))
        assert [o.ignored for o in server.handler.outcomes] == [1, 1]
    assert await all_events(db) == []


async def test_a_message_over_the_size_limit_is_refused(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A])
    huge = dsn(A, original_headers="".join(f"X-Padding-{i}: {'x' * 70}\r\n" for i in range(1000)))
    async with bounce_server(db, max_message_bytes=64 * 1024) as server:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await server.send(return_paths().bounce(seeded.deliveries[A]), huge)
    assert refused.value.code == 552
    assert await all_events(db) == []


async def test_mail_to_the_unsubscribe_address_unsubscribes_like_one_click(db: Database) -> None:
    seeded = await seed_sent_campaign(db, [A, B])
    subscriber = seeded.subscribers[A]
    async with bounce_server(db) as server:
        await server.send(
            return_paths().unsubscribe(seeded.deliveries[A]), plain_mail("unsubscribe"), mail_from=A
        )
        # Again: a second mail changes nothing and records no second event.
        await server.send(
            return_paths().unsubscribe(seeded.deliveries[A]), plain_mail("unsubscribe"), mail_from=A
        )
        assert [o.unsubscribed for o in server.handler.outcomes] == [1, 1]
    # The lists the campaign was sent through, not every list (the one-click scope).
    assert await subscriptions(db, subscriber) == {
        seeded.target_list: SubscriptionStatus.UNSUBSCRIBED,
        seeded.other_list: SubscriptionStatus.CONFIRMED,
    }
    assert await subscriptions(db, seeded.subscribers[B]) == {
        seeded.target_list: SubscriptionStatus.CONFIRMED,
        seeded.other_list: SubscriptionStatus.CONFIRMED,
    }
    [event] = await all_events(db)
    assert (event.type, event.delivery_id) == (EventType.UNSUBSCRIBE, seeded.deliveries[A])
    assert await stats(db, seeded.campaign_id) == {"unsubscribed": 1}
    assert await suppressions(db) == []


async def test_a_token_of_workspace_b_records_into_b_only(db: Database) -> None:
    other = await add_workspace(db, "other")
    with workspace_scope(other):
        theirs: Seeded = await seed_sent_campaign(db, [A])
    ours = await seed_sent_campaign(db, [A])
    async with bounce_server(db) as server:
        await server.send(return_paths().bounce(theirs.deliveries[A]), dsn(A))
        await server.send(return_paths().unsubscribe(theirs.deliveries[A]), plain_mail("unsubscribe"))
    events = await all_events(db)
    assert {(e.workspace_id, e.type, e.delivery_id) for e in events} == {
        (other, EventType.BOUNCE, theirs.deliveries[A]),
        (other, EventType.UNSUBSCRIBE, theirs.deliveries[A]),
    }
    assert await suppressions(db) == [(other, A, SuppressionReason.HARD_BOUNCE, "smtp")]
    # The same address in the default workspace is untouched.
    assert await subscriber_status(db, ours.subscribers[A]) is SubscriberStatus.ENABLED
    assert set((await subscriptions(db, ours.subscribers[A])).values()) == {SubscriptionStatus.CONFIRMED}
    with workspace_scope(DEFAULT_WORKSPACE_ID):
        async with db.session() as s:
            assert (await s.execute(select(func.count()).select_from(Event))).scalar_one() == 0


async def test_a_database_outage_answers_451_so_the_sender_retries(tmp_path: Path) -> None:
    unreachable = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    try:
        async with bounce_server(unreachable) as server:
            with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
                await server.send(return_paths().bounce(1), dsn(A))
    finally:
        await unreachable.dispose()
    assert deferred.value.code == 451
