"""Mailgun webhooks v3: HMAC signature, replay window and token replay, and every fixture."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import DELIVERY_HEADER, META_DELIVERY, MalformedPayload, SignatureInvalid
from emailkit.providers.webhooks import MemorySeenTokens, WebhookDeps, build_parser, receive
from emailkit.providers.webhooks.mailgun import MailgunWebhookParser
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
SYMFONY_KEY = "key-0p6mqbf74lb20gzq9f4dhpn9rg3zyk26"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signed_at(body: bytes) -> datetime:
    return datetime.fromtimestamp(int(json.loads(body)["signature"]["timestamp"]), UTC)


def signed_cases() -> list[dict[str, Any]]:
    data = json.loads(fixture_bytes("mailgun__signed_example.json"))
    return [data, *data["additional_cases"]]


def sign(key: str, event_data: dict[str, Any], timestamp: int, token: str = "a" * 50) -> bytes:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": str(timestamp), "token": token, "signature": signature},
            "event-data": event_data,
        }
    ).encode()


def parser(key: str | None = SYMFONY_KEY, **kwargs: Any) -> MailgunWebhookParser:
    kwargs.setdefault("seen_tokens", MemorySeenTokens())
    return MailgunWebhookParser(signing_key=key, **kwargs)


# --- signatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", signed_cases(), ids=lambda c: c["name"])
async def test_signed_vectors(case: dict[str, Any]) -> None:
    body = case["body"].encode()
    now = signed_at(body)
    p = parser(case["key"]["webhook_signing_key"])
    if not case["expected_valid"]:
        with pytest.raises(SignatureInvalid):
            await p.verify(case["headers"], body, now)
        return
    await p.verify(case["headers"], body, now)
    # Every signed value changed by one character fails (fresh replay memory each time).
    block = json.loads(body)["signature"]
    for field in ("timestamp", "token", "signature"):
        value = block[field]
        changed = value[:-1] + ("1" if value[-1] != "1" else "2")
        tampered = body.replace(f'"{value}"'.encode(), f'"{changed}"'.encode())
        assert tampered != body
        with pytest.raises(SignatureInvalid):
            await parser(case["key"]["webhook_signing_key"]).verify(case["headers"], tampered, now)


async def test_replayed_token_is_refused_once_seen() -> None:
    body = fixture_bytes("mailgun__delivered.json")
    now = signed_at(body)
    p = parser()
    await p.verify({}, body, now)
    with pytest.raises(SignatureInvalid, match="already used"):
        await p.verify({}, body, now)
    # The HMAC does not cover event-data, so swapping it under a captured signature is exactly the replay
    # the token memory stops.
    forged = json.loads(body)
    forged["event-data"]["recipient"] = "someone-else@example.com"
    with pytest.raises(SignatureInvalid, match="already used"):
        await p.verify({}, json.dumps(forged).encode(), now)


async def test_without_a_token_store_replays_are_not_tracked() -> None:
    body = fixture_bytes("mailgun__delivered.json")
    p = MailgunWebhookParser(signing_key=SYMFONY_KEY, seen_tokens=None)
    await p.verify({}, body, signed_at(body))
    await p.verify({}, body, signed_at(body))


async def test_registry_shares_the_token_store_between_builds() -> None:
    deps = WebhookDeps()
    settings = Settings(mailgun_webhook_signing_key=SYMFONY_KEY)
    body = fixture_bytes("mailgun__opened.json")
    await build_parser("mailgun", settings, deps).verify({}, body, signed_at(body))
    with pytest.raises(SignatureInvalid):
        await build_parser("mailgun", settings, deps).verify({}, body, signed_at(body))


async def test_replay_window() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    ts = int(now.timestamp())
    event = {"event": "delivered", "recipient": "a@x.io", "timestamp": ts}
    await parser(tolerance_seconds=300).verify({}, sign(SYMFONY_KEY, event, ts - 299), now)
    with pytest.raises(SignatureInvalid, match="window"):
        await parser(tolerance_seconds=300).verify({}, sign(SYMFONY_KEY, event, ts - 301), now)
    with pytest.raises(SignatureInvalid, match="window"):
        await parser(tolerance_seconds=300).verify({}, sign(SYMFONY_KEY, event, ts + 301), now)
    await parser(tolerance_seconds=0).verify({}, sign(SYMFONY_KEY, event, ts - 10**6), now)


async def test_default_tolerance_rejects_the_old_fixture_signatures() -> None:
    body = fixture_bytes("mailgun__delivered.json")
    with pytest.raises(SignatureInvalid, match="window"):
        await build_parser("mailgun", Settings(mailgun_webhook_signing_key=SYMFONY_KEY)).verify(
            {}, body, datetime.now(UTC)
        )


@pytest.mark.parametrize(
    "payload",
    [
        {"event-data": {"event": "delivered"}},
        {"signature": {"timestamp": "1", "token": "t"}, "event-data": {}},
        {"signature": "nope", "event-data": {}},
        [{"signature": {}}],
    ],
)
async def test_missing_signature_block_fails(payload: Any) -> None:
    with pytest.raises(SignatureInvalid):
        await parser().verify({}, json.dumps(payload).encode(), datetime.now(UTC))


async def test_non_json_body_is_malformed_even_before_the_signature() -> None:
    with pytest.raises(MalformedPayload):
        await parser().verify({}, b"timestamp=1&token=x&signature=y", datetime.now(UTC))


async def test_uppercase_hex_signature_is_accepted() -> None:
    body = fixture_bytes("mailgun__delivered.json")
    data = json.loads(body)
    data["signature"]["signature"] = data["signature"]["signature"].upper()
    await parser().verify({}, json.dumps(data).encode(), signed_at(body))


async def test_unconfigured_or_disabled_checks_nothing() -> None:
    assert not build_parser("mailgun", Settings()).authenticates
    await build_parser("mailgun", Settings()).verify({}, b"{}", datetime.now(UTC))
    off = build_parser("mailgun", Settings(mailgun_webhook_signing_key=SYMFONY_KEY, webhook_verify=False))
    await off.verify({}, b"{}", datetime.now(UTC))


# --- fixtures --------------------------------------------------------------------------------------------

VARS = {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"}
TAGS = ("my_tag_1", "my_tag_2")
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.31 (KHTML, like Gecko) Chrome/26.0.1410.43 Safari/537.31"
)
MID_1 = "20130503182626.18666.16540@app.symfony.com"
MID_2 = "20130503192659.13651.20287@app.symfony.com"

# fixture -> list of (type, bounce type, message id, event id, occurred at, other expected attributes)
EXPECTED: dict[str, list[tuple[EventType, BounceType | None, str, str, str, dict[str, Any]]]] = {
    "mailgun__accepted.json": [],
    "mailgun__clicked.json": [
        (EventType.CLICK, None, MID_1, "Ase7i2zsRYeDXztHGENqRA", "2018-03-16T23:35:39.873676Z", {"url": None, "user_agent": CHROME, "ip": "50.56.129.169"}),
    ],
    "mailgun__complained.json": [
        (EventType.COMPLAINT, None, "20110215055645.25246.63817@app.symfony.com", "-Agny091SquKnsrW2NEKUA", "2018-03-16T20:45:23.501324Z", {}),
    ],
    "mailgun__delivered.json": [
        (EventType.DELIVERED, None, MID_1, "CPgfbmQMTCKtHW6uIWtuVe", "2018-03-19T15:11:02.000002Z", {"reason": "OK"}),
    ],
    "mailgun__failed_permanent.json": [
        (EventType.BOUNCE, BounceType.HARD, MID_2, "G9Bn5sl1TC6nu79C8C0bwg", "2018-03-16T20:46:35.375624Z", {}),
    ],
    "mailgun__failed_permanent_suppress_bounce.json": [
        (EventType.DROPPED, None, MID_2, "G9Bn5sl1TC6nu79C8C0bwg", "2018-03-16T20:46:35.375624Z", {"reason": "Not delivering to previously bounced address"}),
    ],
    "mailgun__failed_temporary.json": [
        (EventType.DEFERRED, None, MID_1, "Fs7-5t81S2ispqxqDw2U4Q", "2018-03-19T15:11:02.908181Z", {}),
    ],
    "mailgun__opened.json": [
        (EventType.OPEN, None, MID_1, "Ase7i2zsRYeDXztHGENqRA", "2018-03-16T23:35:39.873676Z", {"user_agent": CHROME, "ip": "50.56.129.169"}),
    ],
    "mailgun__unsubscribed.json": [
        (EventType.UNSUBSCRIBE, None, MID_1, "Ase7i2zsRYeDXztHGENqRA", "2018-03-16T23:35:39.873676Z", {"user_agent": CHROME, "ip": "50.56.129.169"}),
    ],
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    names = {p.name for p in FIXTURES.glob("mailgun__*.json")} - {"mailgun__signed_example.json"}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture(name: str) -> None:
    body = fixture_bytes(name)
    result = await receive(parser(), {"Content-Type": "application/json"}, body, signed_at(body))
    expected = EXPECTED[name]
    assert len(result.events) == len(expected)
    for event, (type_, bounce_type, mid, event_id, occurred, extra) in zip(
        result.events, expected, strict=True
    ):
        assert event.type is type_
        assert event.bounce_type is bounce_type
        assert event.email == "alice@example.com"
        assert event.provider == "mailgun"
        assert event.provider_message_id == mid
        assert event.provider_event_id == event_id
        assert event.occurred_at == datetime.fromisoformat(occurred)
        assert event.metadata == VARS
        assert event.tags == TAGS
        for attribute in ("url", "user_agent", "ip", "reason"):
            if attribute in extra:
                assert getattr(event, attribute) == extra[attribute], attribute


def test_permanent_failure_reason_is_the_smtp_message() -> None:
    [event] = parser(key=None).parse({}, fixture_bytes("mailgun__failed_permanent.json"))
    assert event.reason == "No Such User Here"


def test_anymail_click_carries_its_url() -> None:
    body = signed_cases()[-1]["body"].encode()
    [event] = parser(key=None).parse({}, body)
    assert (event.type, event.url, event.email) == (
        EventType.CLICK,
        "https://example.com/test",
        "recipient@example.com",
    )
    assert event.provider_message_id is None
    assert event.provider_event_id.startswith("h:")


# --- robustness ------------------------------------------------------------------------------------------


def parse(event_data: Any) -> list[Any]:
    return parser(key=None).parse({}, json.dumps({"event-data": event_data}).encode())


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("bounce", (EventType.BOUNCE, BounceType.HARD)),
        ("generic", (EventType.BOUNCE, BounceType.HARD)),
        ("suppress-bounce", (EventType.DROPPED, None)),
        ("suppress-unsubscribe", (EventType.DROPPED, None)),
        ("suppress-complaint", (EventType.DROPPED, None)),
        ("old", (EventType.BOUNCE, BounceType.SOFT)),
        (None, (EventType.BOUNCE, BounceType.HARD)),
    ],
)
def test_permanent_failure_reasons(reason: str | None, expected: tuple[EventType, BounceType | None]) -> None:
    [event] = parse(
        {"event": "failed", "severity": "permanent", "reason": reason, "recipient": "a@x.io", "timestamp": 1}
    )
    assert (event.type, event.bounce_type) == expected


def test_temporary_failure_is_deferred_whatever_the_reason() -> None:
    [event] = parse(
        {"event": "failed", "severity": "temporary", "reason": "suppress-bounce", "recipient": "a@x.io"}
    )
    assert event.type is EventType.DEFERRED


def test_rejected_is_dropped_and_stored_or_unknown_yield_nothing() -> None:
    assert [e.type for e in parse({"event": "rejected", "recipient": "a@x.io"})] == [EventType.DROPPED]
    assert parse({"event": "stored", "recipient": "a@x.io"}) == []
    assert parse({"event": "list_member_uploaded", "recipient": "a@x.io"}) == []
    assert parse({"event": "delivered"}) == []  # no recipient


def test_message_id_in_angle_brackets_is_unwrapped_and_our_header_is_read() -> None:
    [event] = parse(
        {
            "event": "delivered",
            "recipient": "Alice@Example.com",
            "timestamp": "2024-01-01T00:00:00Z",
            "message": {"headers": {"message-id": "<abc@mg.example>", DELIVERY_HEADER: "77"}},
            "user-variables": {"campaign": 5, "nested": {"a": 1}},
        }
    )
    assert event.provider_message_id == "abc@mg.example"
    assert event.email == "alice@example.com"
    assert event.occurred_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert event.metadata == {"campaign": "5", "nested": '{"a":1}', META_DELIVERY: "77"}
    assert event.delivery_ref == "77"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"x"',
        json.dumps({"signature": {}}).encode(),
        json.dumps({"event-data": []}).encode(),
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parser(key=None).parse({}, body)
