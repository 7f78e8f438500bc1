"""Postmark webhooks: HTTP Basic credentials, record and bounce types, and every fixture."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import MalformedPayload, SignatureInvalid
from emailkit.providers.webhooks import build_parser, receive
from emailkit.providers.webhooks.postmark import PostmarkWebhookParser
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def configured() -> PostmarkWebhookParser:
    return PostmarkWebhookParser(username="postmark", password="s3cret:with:colons")


# --- credentials -----------------------------------------------------------------------------------------


async def test_right_credentials_pass() -> None:
    await configured().verify(basic("postmark", "s3cret:with:colons"), b"{}", NOW)
    await configured().verify(
        {"authorization": basic("postmark", "s3cret:with:colons")["Authorization"]}, b"{}", NOW
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("postmark", "s3cret:with:colonz"),
        basic("postmarK", "s3cret:with:colons"),
        basic("postmark", ""),
        basic("", ""),
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"postmark").decode()},
    ],
)
async def test_wrong_or_missing_credentials_fail(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureInvalid):
        await configured().verify(headers, b"{}", NOW)


async def test_credentials_come_from_settings() -> None:
    settings = Settings(postmark_webhook_username="pm", postmark_webhook_password="pw")
    p = build_parser("postmark", settings)
    assert p.authenticates
    await p.verify(basic("pm", "pw"), b"{}", NOW)
    with pytest.raises(SignatureInvalid):
        await p.verify(basic("pm", "pX"), b"{}", NOW)
    assert not build_parser("postmark", Settings()).authenticates
    await build_parser("postmark", Settings()).verify({}, b"{}", NOW)
    off = build_parser(
        "postmark",
        Settings(postmark_webhook_username="pm", postmark_webhook_password="pw", webhook_verify=False),
    )
    await off.verify({}, b"{}", NOW)


# --- fixtures --------------------------------------------------------------------------------------------

ZERO_ID = "00000000-0000-0000-0000-000000000000"
META = {"example": "value", "example_2": "value"}
CHROME = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/35.0.1916.153 Safari/537.36"

# fixture -> (type, bounce type, message id, event id or None for derived, occurred at, other expected attributes)
EXPECTED: dict[str, tuple[EventType, BounceType | None, str, str | None, str, dict[str, Any]]] = {
    "postmark__bounce_hard.json": (EventType.BOUNCE, BounceType.HARD, ZERO_ID, "42", "2022-09-02T14:29:19.123456Z", {"metadata": META, "tags": ("Test",), "reason": "Test bounce details"}),
    "postmark__bounce_soft.json": (EventType.BOUNCE, BounceType.SOFT, "20130503192659.13651.20287@mg.craftremote.com", "42", "2019-11-05T16:33:54.907025Z", {"metadata": {"send-uuid": "my-uuid"}, "tags": ("Test",)}),
    "postmark__click.json": (EventType.CLICK, None, ZERO_ID, None, "2022-09-02T14:31:09Z", {"metadata": META, "tags": ("welcome-email",), "url": "https://example.com", "user_agent": CHROME, "ip": "188.2.95.4"}),
    "postmark__delivery.json": (EventType.DELIVERED, None, ZERO_ID, None, "2022-09-02T11:49:27Z", {"metadata": META, "tags": ("welcome-email",), "reason": "Test delivery webhook details"}),
    "postmark__open.json": (EventType.OPEN, None, ZERO_ID, None, "2022-09-02T14:30:47Z", {"metadata": META, "tags": ("welcome-email",), "user_agent": CHROME, "ip": "188.2.95.4"}),
    "postmark__spam_complaint.json": (EventType.COMPLAINT, None, ZERO_ID, "42", "2022-09-02T14:29:57.123456Z", {"metadata": META, "tags": ("Test",)}),
    "postmark__subscription_change_hardbounce.json": (EventType.BOUNCE, BounceType.HARD, ZERO_ID, None, "2022-09-02T14:32:30Z", {"metadata": META, "tags": ("welcome-email",), "reason": "HardBounce"}),
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    assert {p.name for p in FIXTURES.glob("postmark__*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture(name: str) -> None:
    result = await receive(configured(), basic("postmark", "s3cret:with:colons"), fixture_bytes(name), NOW)
    type_, bounce_type, mid, event_id, occurred, extra = EXPECTED[name]
    [event] = result.events
    assert event.type is type_
    assert event.bounce_type is bounce_type
    assert event.email == "john@example.com"
    assert event.provider == "postmark"
    assert event.provider_message_id == mid
    if event_id is None:
        assert event.provider_event_id.startswith("h:")
    else:
        assert event.provider_event_id == event_id
    assert event.occurred_at == datetime.fromisoformat(occurred)
    for attribute, value in extra.items():
        assert getattr(event, attribute) == value, attribute


def test_subscription_change_and_bounce_of_the_same_address_are_distinct_events() -> None:
    p = configured()
    [bounce] = p.parse({}, fixture_bytes("postmark__bounce_hard.json"))
    [change] = p.parse({}, fixture_bytes("postmark__subscription_change_hardbounce.json"))
    assert bounce.dedupe_key != change.dedupe_key
    # A retried record keeps its derived id.
    assert (
        change.provider_event_id
        == p.parse({}, fixture_bytes("postmark__subscription_change_hardbounce.json"))[0].provider_event_id
    )


# --- robustness ------------------------------------------------------------------------------------------


def parse(record: Any) -> list[Any]:
    return configured().parse({}, json.dumps(record).encode())


@pytest.mark.parametrize(
    ("bounce_type", "expected"),
    [
        ("HardBounce", (EventType.BOUNCE, BounceType.HARD)),
        ("BadEmailAddress", (EventType.BOUNCE, BounceType.HARD)),
        ("SoftBounce", (EventType.BOUNCE, BounceType.SOFT)),
        ("DnsError", (EventType.BOUNCE, BounceType.SOFT)),
        ("Transient", (EventType.DEFERRED, None)),
        ("Unsubscribe", (EventType.UNSUBSCRIBE, None)),
        ("SpamComplaint", (EventType.COMPLAINT, None)),
        ("ManuallyDeactivated", (EventType.DROPPED, None)),
        ("AutoResponder", None),
        ("Subscribe", None),
        ("BrandNewType", None),
    ],
)
def test_bounce_types(bounce_type: str, expected: tuple[EventType, BounceType | None] | None) -> None:
    events = parse(
        {
            "RecordType": "Bounce",
            "Type": bounce_type,
            "TypeCode": 1,
            "Email": "a@x.io",
            "BouncedAt": "2024-01-01T00:00:00Z",
        }
    )
    assert [(e.type, e.bounce_type) for e in events] == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("reason", "suppress", "expected"),
    [
        ("ManualSuppression", True, EventType.UNSUBSCRIBE),
        ("SpamComplaint", True, EventType.COMPLAINT),
        ("HardBounce", True, EventType.BOUNCE),
        ("HardBounce", False, None),  # reactivation
        ("ManualSuppression", False, None),
    ],
)
def test_subscription_changes(reason: str, suppress: bool, expected: EventType | None) -> None:
    events = parse(
        {
            "RecordType": "SubscriptionChange",
            "Recipient": "a@x.io",
            "SuppressSending": suppress,
            "SuppressionReason": reason,
        }
    )
    assert [e.type for e in events] == ([expected] if expected else [])


def test_offsets_and_seven_digit_fractions_become_utc() -> None:
    [event] = parse(
        {"RecordType": "Delivery", "Recipient": "A@X.io", "DeliveredAt": "2014-08-01T13:28:10.2735393-04:00"}
    )
    assert event.occurred_at == datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)
    assert event.email == "a@x.io"


def test_unknown_record_types_and_records_without_recipient_yield_nothing() -> None:
    assert parse({"RecordType": "Inbound", "Recipient": "a@x.io"}) == []
    assert parse({"RecordType": "Delivery"}) == []
    assert parse({"Nothing": "here"}) == []


def test_array_of_records_is_accepted() -> None:
    events = parse(
        [
            {"RecordType": "Open", "Recipient": "a@x.io"},
            {"RecordType": "Click", "Recipient": "b@x.io", "OriginalLink": "https://x.io"},
        ]
    )
    assert [(e.type, e.email, e.url) for e in events] == [
        (EventType.OPEN, "a@x.io", None),
        (EventType.CLICK, "b@x.io", "https://x.io"),
    ]


def test_metadata_values_become_strings_and_carry_our_ids() -> None:
    [event] = parse(
        {
            "RecordType": "Open",
            "Recipient": "a@x.io",
            "Metadata": {"emailkit_delivery": 12, "emailkit_campaign": "3"},
        }
    )
    assert (event.delivery_ref, event.campaign_ref) == ("12", "3")


@pytest.mark.parametrize("body", [b"", b"<xml/>", b"12", b'"Bounce"', b"\xff"])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        configured().parse({}, body)
