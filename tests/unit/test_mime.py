"""The fast MIME builder produces messages the stdlib parser reads back exactly."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import pytest

from emailkit.domain.ports.provider import DELIVERY_HEADER, Address, OutgoingMessage
from emailkit.providers.mime import MimeBuilder, MimeError, ascii_email, has_long_line, unstructured_header


def make(**overrides: object) -> OutgoingMessage:
    fields: dict[str, object] = {
        "delivery_id": "c7-s42",
        "sender": "bounces@news.example.com",
        "to": Address("ada@example.org", "Ada Lovelace"),
        "from_": Address("news@news.example.com", "Example News"),
        "subject": "Hello",
        "html": "<p>Hello <b>Ada</b></p>\n",
        "text": "Hello Ada\n",
        "headers": {
            "List-Unsubscribe": "<https://mail.example.com/u/tok123>, <mailto:unsub@news.example.com>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Example News <news.example.com>",
        },
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        assert not part.defects, part.defects
    return msg


def parts(msg: EmailMessage) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = part.get_content().replace("\r\n", "\n")
    return found


def assert_wire_format(data: bytes) -> None:
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n"), "every line ends with CRLF"
    assert b"\r\r" not in data
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    data.decode("ascii")  # 7-bit clean: non-ASCII travels encoded


def test_headers_and_both_parts_round_trip() -> None:
    built = MimeBuilder().build(make())
    assert_wire_format(built.data)
    msg = parse(built.data)
    assert msg["Subject"] == "Hello"
    assert msg["From"].addresses[0].display_name == "Example News"
    assert msg["From"].addresses[0].addr_spec == "news@news.example.com"
    assert msg["To"].addresses[0].addr_spec == "ada@example.org"
    assert msg["Message-ID"] == built.message_id
    assert built.message_id.startswith("<c7-s42.") and built.message_id.endswith("@news.example.com>")
    assert msg[DELIVERY_HEADER] == "c7-s42"
    assert msg["List-Unsubscribe"] == "<https://mail.example.com/u/tok123>, <mailto:unsub@news.example.com>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Example News <news.example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert email.utils.parsedate_to_datetime(msg["Date"]).utcoffset() is not None
    assert msg.get_content_type() == "multipart/alternative"
    # Plain text first: clients show the last alternative they understand.
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert parts(msg) == {"text/plain": "Hello Ada\n", "text/html": "<p>Hello <b>Ada</b></p>\n"}


def test_non_ascii_subject_names_and_bodies_round_trip() -> None:
    subject = "Café ☕ news for Zoë — 🎉 " * 4
    html = "<p>Grüße aus Köln — 日本語のテキスト 🎉</p>\n" * 300
    text = "Grüße, Zoë!\r\nZweite Zeile\rDritte\n"
    built = MimeBuilder().build(
        make(
            subject=subject,
            html=html,
            text=text,
            to=Address("zoe@example.org", "Zoë Ünicode"),
            from_=Address("news@news.example.com", "Nachrichten Ü"),
            reply_to=Address("replies@news.example.com", "Équipe"),
        )
    )
    assert_wire_format(built.data)
    msg = parse(built.data)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == "Zoë Ünicode"
    assert msg["From"].addresses[0].display_name == "Nachrichten Ü"
    assert msg["Reply-To"].addresses[0].display_name == "Équipe"
    assert msg["Reply-To"].addresses[0].addr_spec == "replies@news.example.com"
    got = parts(msg)
    assert got["text/html"] == html
    assert got["text/plain"] == "Grüße, Zoë!\nZweite Zeile\nDritte\n"
    for part in msg.iter_parts():
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_content_charset() == "utf-8"


def test_ascii_parts_go_out_7bit_unless_a_line_is_too_long() -> None:
    long_line = "<td>" + "x" * 1200 + "</td>\n"
    msg = parse(MimeBuilder().build(make(html=long_line, text="short\n")).data)
    encodings = {p.get_content_type(): p["Content-Transfer-Encoding"] for p in msg.iter_parts()}
    assert encodings == {"text/plain": "7bit", "text/html": "base64"}
    assert parts(msg)["text/html"] == long_line


def test_body_containing_the_boundary_is_encoded() -> None:
    builder = MimeBuilder()
    first = builder.build(make()).data
    boundary = first.split(b'boundary="')[1].split(b'"')[0].decode()
    html = f"<p>--{boundary}</p>\n--{boundary}--\n"
    msg = parse(builder.build(make(html=html)).data)
    assert parts(msg)["text/html"] == html
    assert len(list(msg.iter_parts())) == 2


def test_single_part_messages() -> None:
    html_only = parse(MimeBuilder().build(make(text=None)).data)
    assert html_only.get_content_type() == "text/html"
    assert html_only.get_content().replace("\r\n", "\n") == "<p>Hello <b>Ada</b></p>\n"
    text_only = parse(MimeBuilder().build(make(html=None, text="Just text")).data)
    assert text_only.get_content_type() == "text/plain"
    assert text_only.get_content().replace("\r\n", "\n") == "Just text\n"


def test_lines_starting_with_dots_and_lone_dots_survive_as_content() -> None:
    text = ".leading dot\n.\nend\n"
    msg = parse(MimeBuilder().build(make(text=text)).data)
    assert parts(msg)["text/plain"] == text


def test_long_ascii_subject_is_folded_and_unfolds_to_the_original() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    data = MimeBuilder().build(make(subject=subject)).data
    head = data.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsub"))
    assert parse(data)["Subject"] == subject


def test_unbreakable_long_subject_still_fits_line_limits() -> None:
    subject = "x" * 2000
    data = MimeBuilder().build(make(subject=subject)).data
    assert_wire_format(data)
    assert parse(data)["Subject"] == subject


def test_header_injection_is_neutralised() -> None:
    data = (
        MimeBuilder()
        .build(
            make(
                subject="Hi\r\nBcc: victim@example.com",
                to=Address("ada@example.org", 'Ada\n"Evil"\r\nX-Injected: 1'),
                headers={"List-Id": "news\r\nX-Other: 2"},
            )
        )
        .data
    )
    msg = parse(data)
    assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["X-Other"] is None
    assert msg["Subject"] == "Hi Bcc: victim@example.com"
    assert msg["To"].addresses[0].display_name == 'Ada "Evil" X-Injected: 1'


def test_display_names_with_specials_are_quoted() -> None:
    msg = parse(MimeBuilder().build(make(from_=Address("news@news.example.com", 'Smith, John "JJ"'))).data)
    assert msg["From"].addresses[0].display_name == 'Smith, John "JJ"'
    assert msg["From"].addresses[0].addr_spec == "news@news.example.com"


def test_structural_headers_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match="Subject"):
        MimeBuilder().build(make(headers={"Subject": "sneaky"}))
    with pytest.raises(ValueError, match="header name"):
        MimeBuilder().build(make(headers={"Bad Name": "x"}))


def test_explicit_message_id_and_date_cache() -> None:
    now = [1_700_000_000.0]
    builder = MimeBuilder(clock=lambda: now[0])
    a = parse(builder.build(make(message_id="<fixed@example.com>")).data)
    assert a["Message-ID"] == "<fixed@example.com>"
    assert a["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    now[0] += 61
    b = parse(builder.build(make(message_id="bare@example.com")).data)
    assert b["Message-ID"] == "<bare@example.com>"
    assert b["Date"] == "Tue, 14 Nov 2023 22:14:21 +0000"


def test_generated_message_ids_are_unique() -> None:
    builder = MimeBuilder()
    ids = {builder.build(make()).message_id for _ in range(200)}
    assert len(ids) == 200


def test_addresses() -> None:
    assert ascii_email("user@bücher.example") == "user@xn--bcher-kva.example"
    assert ascii_email("first.last+tag@example.com") == "first.last+tag@example.com"
    for bad in (
        "jörg@example.com",
        "no-at-sign",
        "a b@example.com",
        "a@exa mple.com",
        "<a@b.c>",
        "a@-bad-.com",
    ):
        with pytest.raises(MimeError):
            ascii_email(bad)
    with pytest.raises(MimeError):
        MimeBuilder().build(make(to=Address("jörg@example.com")))
    msg = parse(MimeBuilder().build(make(to=Address("user@bücher.example"))).data)
    assert msg["To"].addresses[0].addr_spec == "user@xn--bcher-kva.example"


def test_long_line_detection_at_the_limit() -> None:
    assert not has_long_line(b"a" * 998 + b"\r\n")
    assert has_long_line(b"a" * 999 + b"\r\n")
    assert not has_long_line((b"b" * 500 + b"\r\n") * 50 + b"a" * 998 + b"\r\n")
    assert has_long_line((b"b" * 500 + b"\r\n") * 50 + b"a" * 999 + b"\r\n" + b"c\r\n")
    assert has_long_line(b"short\r\n" + b"a" * 5000 + b"\r\n")


def test_unstructured_header_encodes_only_when_needed() -> None:
    assert unstructured_header("Subject", "plain") == "Subject: plain"
    encoded = unstructured_header("Subject", "naïve")
    assert encoded.startswith("Subject: =?utf-8?b?") and encoded.isascii()


def test_message_validation() -> None:
    with pytest.raises(ValueError, match="delivery_id"):
        make(delivery_id="../etc/passwd")
    with pytest.raises(ValueError, match="HTML part"):
        make(html=None, text=None)
