"""Reading bounces and complaint reports (tests/fixtures/bounces, sources in SOURCES.md) into feedback events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import META_DELIVERY
from emailkit.inbound.reports import PROVIDER, events_from_message, read_report

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

B, C, D = EventType.BOUNCE, EventType.COMPLAINT, EventType.DEFERRED
HARD, SOFT = BounceType.HARD, BounceType.SOFT

# file -> (kind, [(type, recipient, hard/soft, status)]) as each report states it.
EXPECTED: dict[str, tuple[str, list[tuple[EventType, str | None, BounceType | None, str | None]]]] = {
    "rfc3464-simple-dsn.eml": ("dsn", [(B, "louisl@larry.slip.umd.edu", SOFT, "4.0.0")]),
    "sisimai-rfc3464-01.eml": ("dsn", [(B, "userunknown@bouncehammer.jp", HARD, "5.1.1")]),
    "dsn-flufl-02-soft.eml": ("dsn", [(B, "zzzzz@zeus.hud.ac.uk", SOFT, "4.4.7")]),
    # Gmail's older bounces are text with no delivery-status part: flufl.bounce reads them.
    "gmail-sisimai-01.eml": ("heuristic", [(B, "userunknown@example.jp", HARD, None)]),
    "gmail-sisimai-06-delayed.eml": ("heuristic", [(D, "kijitora@example.jp", None, None)]),
    "outlook-sisimai-02.eml": ("dsn", [(B, "kijitora@example.jp", HARD, "5.1.1")]),
    "outlook-sisimai-06-delayed.eml": ("dsn", [(D, "kijitora@example.com", None, "4.4.7")]),
    "outlook-sisimai-07-expired.eml": ("dsn", [(B, "kijitora@example.com", SOFT, "4.4.7")]),
    "hotmail-sisimai-rhost-outlook-08.eml": ("dsn", [(B, "kijitora@hotmail.example.com", HARD, "5.5.0")]),
    "office365-sisimai-03.eml": ("dsn", [(B, "kijitora@example.com", HARD, "5.1.0")]),
    "office365-sisimai-01-no-status-part.eml": ("none", []),
    "microsoft-flufl-01.eml": ("heuristic", [(B, "djbennett@ikon.com", HARD, None)]),
    "hotpop-flufl-01.eml": ("heuristic", [(B, "allensmithee@hotpop.com", HARD, None)]),
    "yahoo-sisimai-03.eml": ("heuristic", [(B, "kijitora@example.jp", HARD, None)]),
    "yahoo-sisimai-rhost-yahooinc-03.eml": (
        "dsn",
        [
            (B, "this-local-part-does-not-exist@yahoo.com", HARD, "5.0.0"),
            (B, "kijitora@neko.example.com", HARD, "5.3.5"),
        ],
    ),
    "yahoo-flufl-01.eml": ("heuristic", [(B, "subscribe.motorcycles@listsociety.com", HARD, None)]),
    "exim-sisimai-01.eml": ("heuristic", [(B, "kijitora@example.ed.jp", HARD, None)]),
    "exim-sisimai-29-dsn.eml": ("dsn", [(B, "kijitora@example.co.jp", HARD, "5.0.0")]),
    "exim-flufl-01.eml": ("heuristic", [(B, "delangen@its.tudelft.nl", HARD, None)]),
    "postfix-sisimai-01.eml": ("dsn", [(B, "kijitora@example.org", HARD, "5.1.1")]),
    "postfix-sisimai-05-soft.eml": ("dsn", [(B, "kijitora@example.org", SOFT, "4.1.1")]),
    "postfix-flufl-01.eml": ("heuristic", [(B, "xxxxx@local.ie", HARD, None)]),
    "qmail-sisimai-01.eml": ("heuristic", [(B, "kijitora@example.ne.jp", HARD, None)]),
    "qmail-sisimai-02-two-recipients.eml": (
        "heuristic",
        [(B, "filtered@example.jp", HARD, None), (B, "userunknown@example.jp", HARD, None)],
    ),
    "qmail-flufl-01.eml": ("heuristic", [(B, "psadisc@wwwmail.n-h.de", HARD, None)]),
    "rfc5965-extended-example.eml": ("arf", [(C, "user@example.com", None, None)]),
    "arf-sisimai-14.eml": ("arf", [(C, "kijitora@y.example.com", None, None)]),
    "arf-sisimai-16.eml": ("arf", [(C, "kijitora@example.com", None, None)]),
    # Redacted (RFC 6590): the report names nobody; only a VERP address can tell whom it is about.
    "arf-sisimai-11-redacted.eml": ("arf", [(C, None, None, None)]),
    "not-a-bounce-sisimai-01.eml": ("none", []),
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_is_checked_and_has_its_source() -> None:
    files = {p.name for p in FIXTURES.glob("*.eml")}
    assert files == set(EXPECTED)
    sources = (FIXTURES / "SOURCES.md").read_text()
    assert all(f"`{name}`" in sources for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_report_findings(name: str) -> None:
    kind, expected = EXPECTED[name]
    report = read_report(fixture(name))
    assert report.kind == kind
    assert [(f.type, f.recipient, f.bounce_type, f.status) for f in report.findings] == expected


@pytest.mark.parametrize("name", sorted(n for n, (_, found) in EXPECTED.items() if found))
def test_events_without_verp_use_the_reported_recipient(name: str) -> None:
    _, expected = EXPECTED[name]
    events = events_from_message(fixture(name), NOW)
    assert [(e.type, e.email, e.bounce_type) for e in events] == [
        (t, r, bt) for t, r, bt, _ in expected if r is not None
    ]
    for event in events:
        assert event.provider == PROVIDER and event.occurred_at == NOW
        assert META_DELIVERY not in event.metadata


def test_dsn_details_reach_the_event_reason() -> None:
    [event] = events_from_message(fixture("postfix-sisimai-01.eml"), NOW)
    assert (
        event.reason
        == '5.1.1; x-unix; procmail: Couldn\'t create "/var/spool/mail/neko" id: r.example.org: No such user'
    )
    assert event.raw_event == "dsn:failed"
    [complaint] = events_from_message(fixture("rfc5965-extended-example.eml"), NOW)
    assert complaint.reason == "abuse" and complaint.raw_event == "arf:complaint"


def test_verp_delivery_and_recipient_win_over_the_report() -> None:
    # A forwarded address answered, or the complaint was redacted: the delivery says whom we mailed.
    [bounce] = events_from_message(
        fixture("postfix-sisimai-01.eml"), NOW, delivery_id=42, recipient="Person@Example.net"
    )
    assert bounce.email == "person@example.net" and bounce.metadata == {META_DELIVERY: "42"}
    assert bounce.bounce_type is HARD
    [complaint] = events_from_message(
        fixture("arf-sisimai-11-redacted.eml"), NOW, delivery_id=7, recipient="someone@example.org"
    )
    assert (complaint.type, complaint.email, complaint.delivery_ref) == (C, "someone@example.org", "7")


def test_two_recipient_blocks_about_one_verp_delivery_make_one_event() -> None:
    events = events_from_message(
        fixture("yahoo-sisimai-rhost-yahooinc-03.eml"), NOW, delivery_id=5, recipient="a@example.org"
    )
    assert [(e.type, e.email) for e in events] == [(B, "a@example.org")]


def test_heuristics_must_name_the_verp_recipient() -> None:
    """Free-text detection only counts for the person the delivery went to."""
    raw = fixture("qmail-sisimai-01.eml")
    assert events_from_message(raw, NOW, delivery_id=3, recipient="someone-else@example.org") == []
    [event] = events_from_message(raw, NOW, delivery_id=3, recipient="Kijitora@example.ne.jp")
    assert event.bounce_type is HARD and event.delivery_ref == "3"


def test_the_same_report_always_makes_the_same_event_identity() -> None:
    raw = fixture("outlook-sisimai-02.eml")
    first = events_from_message(raw, NOW, delivery_id=9, recipient="x@example.org")
    again = events_from_message(
        raw, datetime(2026, 12, 8, tzinfo=UTC), delivery_id=9, recipient="x@example.org"
    )
    assert [e.dedupe_key for e in first] == [e.dedupe_key for e in again]
    other = events_from_message(
        fixture("postfix-sisimai-01.eml"), NOW, delivery_id=9, recipient="x@example.org"
    )
    assert first[0].dedupe_key != other[0].dedupe_key


def test_the_quoted_delivery_header_ties_a_report_without_verp() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: news@example.com\r\nMessage-ID: <r1@mx.example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nUndeliverable.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@example.com\r\nTo: gone@example.net\r\n"
        b"X-Emailkit-Delivery: 314\r\n\r\n--b--\r\n"
    )
    [event] = events_from_message(raw, NOW)
    assert (event.email, event.delivery_ref, event.bounce_type) == ("gone@example.net", "314", HARD)


def test_vacation_replies_are_not_bounces() -> None:
    raw = (
        b"From: Kim <kim@example.net>\r\nTo: bounce+x@bounces.example.com\r\nSubject: Out of office\r\n"
        b"Auto-Submitted: auto-replied\r\nMessage-ID: <v1@example.net>\r\n\r\n"
        b"I am away. Mail to kim@example.net is not read: user unknown until Monday.\r\n"
    )
    assert read_report(raw).kind == "none"
    assert events_from_message(raw, NOW, delivery_id=1, recipient="kim@example.net") == []


def _dsn(status_type: str, blocks: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nMessage-ID: <g1@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nUndeliverable.\r\n"
        f"--b\r\nContent-Type: {status_type}\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n{blocks}"
        "--b--\r\n"
    ).encode()


def test_a_global_dsn_is_read_block_by_block() -> None:
    """RFC 6533's message/global-delivery-status, which the email package does not split into blocks."""
    raw = _dsn(
        "message/global-delivery-status",
        "Final-Recipient: rfc822; first@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "Final-Recipient: rfc822; second@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n",
    )
    report = read_report(raw)
    assert [(f.type, f.recipient, f.status) for f in report.findings] == [
        (B, "first@example.net", "5.1.1"),
        (D, "second@example.net", "4.4.1"),
    ]


def test_with_verp_the_blocks_about_the_recipient_win() -> None:
    """An alias expanded to two mailboxes: the block about the address we mailed is the one that counts."""
    raw = _dsn(
        "message/delivery-status",
        "Final-Recipient: rfc822; team-member@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
        "Original-Recipient: rfc822; team@example.net\r\nFinal-Recipient: rfc822; team@example.net\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n\r\n",
    )
    events = events_from_message(raw, NOW, delivery_id=4, recipient="team@example.net")
    assert [(e.type, e.email, e.bounce_type) for e in events] == [(B, "team@example.net", HARD)]
    # With no block about it (a forwarding address answered), the report's blocks are about our recipient.
    forwarded = events_from_message(raw, NOW, delivery_id=4, recipient="old@example.org")
    assert [(e.type, e.email) for e in forwarded] == [(D, "old@example.org"), (B, "old@example.org")]
