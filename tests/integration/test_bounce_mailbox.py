"""The bounce mailbox reader against a real IMAP server (a throw-away Dovecot, tests/support/dovecot.py): reports
delivered into the mailbox with APPEND are recorded exactly as the bounce server records them, and moved out.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, no_scope
from emailkit.db.tables.audience import SuppressionReason
from emailkit.db.tables.feedback import BounceType, Event, EventType
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.inbound.handling import Receiver
from emailkit.inbound.mailbox import Connection, MailboxError, MailboxReader, PassSummary, move_messages
from emailkit.inbound.mailbox_config import MailboxConfig
from tests.integration.test_bounce_server import all_events, suppressions
from tests.support import dovecot as dovecot_support
from tests.support.bounces import arf, bounce_server, dsn, plain_mail, return_paths
from tests.support.dovecot import PASSWORD, USER, Dovecot
from tests.support.feedback import seed_sent_campaign, stats

A, B = "ada@example.net", "bob@example.net"
WAIT = 30.0


@pytest.fixture(scope="module")
def imap_server() -> Iterator[Dovecot]:
    # A missing server fails (never skips), like a missing Chromium: a green run always means it ran.
    if not dovecot_support.available():
        pytest.fail("dovecot is not installed: apt-get install -y dovecot-imapd (.ci/run installs it)")
    with dovecot_support.dovecot() as server:
        yield server


@pytest.fixture
def imap(imap_server: Dovecot) -> Dovecot:
    imap_server.empty()
    return imap_server


def reader(
    db: Database, server: Dovecot, *, verp: bool = True, query: str = "", **options: object
) -> MailboxReader:
    url = server.url(query="processed=Processed" + (f"&{query}" if query else ""))
    receiver = Receiver(db, return_paths() if verp else None)
    return MailboxReader(MailboxConfig.from_url(url), receiver, **options)  # type: ignore[arg-type]


async def run_once(r: MailboxReader) -> PassSummary:
    # Outside the tests' workspace, as `emailkit bounce-mailbox` runs.
    with no_scope():
        return await r.run_once()


def with_headers(raw: bytes, **headers: str) -> bytes:
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return lines.encode() + raw


async def test_a_dsn_records_a_hard_bounce_suppresses_and_moves_to_processed(
    db: Database, imap: Dovecot
) -> None:
    seeded = await seed_sent_campaign(db, [A, B], provider="smtp")
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A])))
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.recorded, summary.unhandled, summary.failed) == (1, 1, 0, 0)
    [event] = await all_events(db)
    assert (event.type, event.bounce_type, event.email, event.delivery_id) == (
        EventType.BOUNCE,
        BounceType.HARD,
        A,
        seeded.deliveries[A],
    )
    assert event.campaign_id == seeded.campaign_id and event.provider == "smtp"
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.HARD_BOUNCE, "smtp")]
    assert await stats(db, seeded.campaign_id) == {"bounced": 1}
    assert (imap.count("INBOX"), imap.count("Processed")) == (0, 1)


async def test_the_reader_records_what_the_bounce_server_records(db: Database, imap: Dovecot) -> None:
    """The same report, through either way in, is one event: the same recorder, the same key."""
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    address = return_paths().bounce(seeded.deliveries[A])
    report = dsn(A)
    async with bounce_server(db) as server:
        await server.send(address, report)
    [by_smtp] = await all_events(db)
    imap.append(with_headers(report, X_Original_To=address))
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.recorded) == (1, 0)
    [event] = await all_events(db)
    assert event.id == by_smtp.id


async def test_an_arf_complaint_records_a_complaint(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    imap.append(with_headers(arf(A), X_Original_To=return_paths().bounce(seeded.deliveries[A])))
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.recorded) == (1, 1)
    [event] = await all_events(db)
    assert (event.type, event.email, event.delivery_id) == (EventType.COMPLAINT, A, seeded.deliveries[A])
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.COMPLAINT, "smtp")]
    assert await stats(db, seeded.campaign_id) == {"complained": 1}


async def test_without_a_verp_address_the_quoted_delivery_header_and_address_decide(
    db: Database, imap: Dovecot
) -> None:
    seeded = await seed_sent_campaign(db, [A, B], provider="smtp")
    quoted = f"X-Emailkit-Delivery: {seeded.deliveries[A]}\r\n"
    imap.append(dsn(A, original_headers=quoted))
    # Forged or garbled: it quotes A's delivery but reports B.
    imap.append(dsn(B, original_headers=quoted))
    summary = await run_once(reader(db, imap, verp=False, query="unhandled=Unhandled"))
    assert (summary.processed, summary.unhandled, summary.recorded) == (1, 1, 1)
    [event] = await all_events(db)
    assert (event.email, event.delivery_id, event.type) == (A, seeded.deliveries[A], EventType.BOUNCE)
    assert (imap.count("INBOX"), imap.count("Processed"), imap.count("Unhandled")) == (0, 1, 1)
    assert b"bob@example.net" in imap.messages("Unhandled")[0]


async def test_mail_that_is_no_report_about_us_goes_to_the_unhandled_folder(
    db: Database, imap: Dovecot
) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    ours = return_paths().bounce(seeded.deliveries[A])
    imap.append(with_headers(plain_mail(), Delivered_To=ours))  # somebody answering the bounce address
    imap.append(dsn(A))  # a report that names no delivery of ours
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A] + 1000)))
    summary = await run_once(reader(db, imap, query="unhandled=Unhandled"))
    assert (summary.processed, summary.unhandled, summary.recorded) == (0, 3, 0)
    assert await all_events(db) == []
    assert (imap.count("INBOX"), imap.count("Processed"), imap.count("Unhandled")) == (0, 0, 3)


async def test_an_unsubscribe_mail_unsubscribes(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    imap.append(with_headers(plain_mail("unsubscribe"), To=return_paths().unsubscribe(seeded.deliveries[A])))
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.unhandled) == (1, 0)
    with all_workspaces():
        async with db.session() as s:
            types = list((await s.execute(select(Event.type))).scalars())
    assert types == [EventType.UNSUBSCRIBE]


async def test_a_second_run_records_nothing_new(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A, B], provider="smtp")
    for email in (A, B):
        imap.append(with_headers(dsn(email), Delivered_To=return_paths().bounce(seeded.deliveries[email])))
    first = await run_once(reader(db, imap))
    second = await run_once(reader(db, imap))
    assert (first.processed, first.recorded) == (2, 2)
    assert (second.processed, second.unhandled, second.recorded) == (0, 0, 0)
    assert len(await all_events(db)) == 2
    assert await stats(db, seeded.campaign_id) == {"bounced": 2}


async def test_a_crash_between_recording_and_moving_counts_once(
    db: Database, imap: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A])))
    real_move = Connection.move

    def crash(self: Connection, uids: list[int], folder: str) -> None:
        raise ConnectionResetError("the reader died here")

    monkeypatch.setattr(Connection, "move", crash)
    with pytest.raises(ConnectionResetError):
        await run_once(reader(db, imap))
    assert len(await all_events(db)) == 1
    assert imap.count("INBOX") == 1  # recorded, never moved

    monkeypatch.setattr(Connection, "move", real_move)
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.recorded) == (1, 0)
    assert len(await all_events(db)) == 1
    assert await stats(db, seeded.campaign_id) == {"bounced": 1}
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.HARD_BOUNCE, "smtp")]
    assert (imap.count("INBOX"), imap.count("Processed")) == (0, 1)


async def test_a_failed_recording_leaves_the_message_for_the_next_pass(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A])))
    broken = Database("sqlite+aiosqlite:////nonexistent/dir/emailkit.db")
    try:
        r = reader(db, imap)
        r.receiver.db = broken
        summary = await run_once(r)
    finally:
        await broken.dispose()
    assert (summary.processed, summary.failed) == (0, 1)
    assert imap.count("INBOX") == 1
    summary = await run_once(reader(db, imap))
    assert (summary.processed, summary.recorded) == (1, 1)


async def test_idle_picks_up_a_message_appended_while_it_waits(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    passes: asyncio.Queue[PassSummary] = asyncio.Queue()
    # An hour between looks: only IDLE can notice the message within the test's patience.
    r = reader(db, imap, poll_seconds=3600.0, passes=passes)
    stop = asyncio.Event()
    with no_scope():
        task = asyncio.create_task(r.run(stop))
    try:
        assert (await asyncio.wait_for(passes.get(), WAIT)).processed == 0
        await asyncio.wait_for(r.waiting.wait(), WAIT)
        raw = with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A]))
        await asyncio.to_thread(imap.append, raw)
        after = await asyncio.wait_for(passes.get(), WAIT)
        assert (after.processed, after.recorded) == (1, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
    [event] = await all_events(db)
    assert (event.type, event.email) == (EventType.BOUNCE, A)
    assert (imap.count("INBOX"), imap.count("Processed")) == (0, 1)


async def test_without_idle_it_polls(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    passes: asyncio.Queue[PassSummary] = asyncio.Queue()
    r = reader(db, imap, idle=False, poll_seconds=1.0, passes=passes)
    stop = asyncio.Event()
    with no_scope():
        task = asyncio.create_task(r.run(stop))
    try:
        assert (await asyncio.wait_for(passes.get(), WAIT)).processed == 0
        raw = with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A]))
        await asyncio.to_thread(imap.append, raw)
        while (summary := await asyncio.wait_for(passes.get(), WAIT)).processed == 0:
            pass
        assert summary.recorded == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


async def test_a_wrong_password_is_a_clear_error_that_does_not_show_it(db: Database, imap: Dovecot) -> None:
    wrong = "not-the-Password-42"
    r = MailboxReader(MailboxConfig.from_url(imap.url(password=wrong)), Receiver(db, return_paths()))
    with pytest.raises(MailboxError) as raised:
        await run_once(r)
    message = str(raised.value)
    assert f"refused the login of {USER!r}" in message and "127.0.0.1" in message
    assert "uthentication failed" in message
    assert wrong not in message and wrong not in repr(r.config)
    # The long-running reader gives up too: retrying a refused password only locks accounts.
    with pytest.raises(MailboxError):
        await asyncio.wait_for(r.run(asyncio.Event()), WAIT)


async def test_the_password_never_reaches_the_logs(
    db: Database, imap: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A])))
    caplog.set_level(logging.DEBUG)
    assert (await run_once(reader(db, imap))).processed == 1
    assert "LOGIN" in caplog.text  # imapclient narrated the session, login included
    assert PASSWORD not in caplog.text


async def test_tls_and_starttls_with_a_trusted_certificate(db: Database, imap: Dovecot) -> None:
    user = USER.replace("@", "%40")
    for url in (
        f"imaps://{user}:{PASSWORD}@127.0.0.1:{imap.tls_port}/INBOX?cafile={imap.cafile}",
        f"imap://{user}:{PASSWORD}@127.0.0.1:{imap.port}/INBOX?cafile={imap.cafile}",
    ):
        r = MailboxReader(MailboxConfig.from_url(url), Receiver(db, return_paths()))
        assert await run_once(r) == PassSummary()
    untrusted = f"imaps://{user}:{PASSWORD}@127.0.0.1:{imap.tls_port}/INBOX"
    r = MailboxReader(MailboxConfig.from_url(untrusted), Receiver(db, return_paths()))
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await run_once(r)


def test_copy_delete_expunge_where_the_server_has_no_move(imap: Dovecot) -> None:
    for n in range(3):
        imap.append(plain_mail(f"message {n}"))
    with imap.client() as client:
        client.create_folder("Processed")
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        move_messages(client, uids[:2], "Processed", can_move=False)
    assert (imap.count("INBOX"), imap.count("Processed")) == (1, 2)


async def test_a_message_over_the_size_limit_is_not_read(db: Database, imap: Dovecot) -> None:
    seeded = await seed_sent_campaign(db, [A], provider="smtp")
    address = return_paths().bounce(seeded.deliveries[A])
    imap.append(with_headers(dsn(A), Delivered_To=address, X_Padding="x" * 2000))
    imap.append(with_headers(dsn(A), Delivered_To=address))
    summary = await run_once(reader(db, imap, query="unhandled=Unhandled", max_message_bytes=1500))
    assert (summary.processed, summary.unhandled, summary.recorded) == (1, 1, 1)
    assert b"X-Padding" in imap.messages("Unhandled")[0]
