"""SendGrid Event Webhook: ECDSA signatures (official vectors and our own key) and every fixture."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    META_CAMPAIGN,
    META_DELIVERY,
    META_SUBSCRIBER,
    MalformedPayload,
    SignatureInvalid,
)
from emailkit.providers.webhooks import WebhookConfigError, build_parser, receive
from emailkit.providers.webhooks.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhookParser,
    message_id,
)
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
OFFICIAL_SIGNED_AT = 1600112502


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def at(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def signed_cases() -> list[dict[str, Any]]:
    data = json.loads(fixture_bytes("sendgrid__signed_example.json"))
    return [data, *data["additional_cases"]]


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed_headers(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(timestamp)}


# --- official vectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", signed_cases(), ids=lambda c: c["name"])
async def test_official_signed_vectors(case: dict[str, Any]) -> None:
    body = case["body"].encode()
    now = at(OFFICIAL_SIGNED_AT + 30)
    public_key = case["key"]["public_key_base64_der_spki"]
    if public_key == "incorrect":
        # An unusable key is a configuration error found at start-up, never an accepted request.
        with pytest.raises(WebhookConfigError):
            SendGridWebhookParser(public_key=public_key)
        return
    parser = SendGridWebhookParser(public_key=public_key)
    if case["expected_valid"]:
        await parser.verify(case["headers"], body, now)
        for i in (0, len(body) // 2, len(body) - 1):
            tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
            with pytest.raises(SignatureInvalid):
                await parser.verify(case["headers"], tampered, now)
    else:
        with pytest.raises(SignatureInvalid):
            await parser.verify(case["headers"], body, now)


async def test_official_vector_through_settings_and_receive() -> None:
    case = signed_cases()[0]
    settings = Settings(sendgrid_webhook_public_key=case["key"]["public_key_base64_der_spki"])
    result = await receive(
        build_parser("sendgrid", settings), case["headers"], case["body"].encode(), at(OFFICIAL_SIGNED_AT)
    )
    [event] = result.events
    assert event.type is EventType.DROPPED
    assert event.email == "hello@world.com"
    assert event.provider_message_id == "LRzXl_NHStOGhQ4kofSm_A"
    assert event.provider_event_id == "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    assert event.reason == "Bounced Address"
    assert event.occurred_at == at(1600112492)


async def test_official_vector_is_stale_outside_the_tolerance_window() -> None:
    case = signed_cases()[0]
    parser = SendGridWebhookParser(
        public_key=case["key"]["public_key_base64_der_spki"], tolerance_seconds=300
    )
    with pytest.raises(SignatureInvalid, match="window"):
        await parser.verify(case["headers"], case["body"].encode(), at(OFFICIAL_SIGNED_AT + 301))
    with pytest.raises(SignatureInvalid, match="window"):
        await parser.verify(case["headers"], case["body"].encode(), at(OFFICIAL_SIGNED_AT - 301))
    # 0 turns the age check off.
    no_limit = SendGridWebhookParser(
        public_key=case["key"]["public_key_base64_der_spki"], tolerance_seconds=0
    )
    await no_limit.verify(case["headers"], case["body"].encode(), datetime.now(UTC))


def test_public_key_as_pem_is_accepted() -> None:
    der = base64.b64decode(signed_cases()[0]["key"]["public_key_base64_der_spki"])
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert SendGridWebhookParser(public_key=pem.decode()).authenticates


def test_a_key_that_is_not_p256_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(WebhookConfigError, match="P-256"):
        SendGridWebhookParser(public_key=base64.b64encode(der).decode())


# --- our own key -----------------------------------------------------------------------------------------


async def test_own_signature_verifies_and_any_change_fails(key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture_bytes("sendgrid__batch_mixed.json")
    now = datetime(2024, 5, 1, tzinfo=UTC)
    ts = int(now.timestamp())
    parser = SendGridWebhookParser(public_key=public_b64(key))
    headers = signed_headers(key, body, ts)
    await parser.verify(headers, body, now)
    # Header names are matched case-insensitively, as HTTP does.
    await parser.verify({k.lower(): v for k, v in headers.items()}, body, now)
    with pytest.raises(SignatureInvalid):
        await parser.verify(headers, body.replace(b"example@test.com", b"example@test.org", 1), now)
    with pytest.raises(SignatureInvalid):
        await parser.verify({**headers, TIMESTAMP_HEADER: str(ts + 1)}, body, now)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: "AAAA"},
        {TIMESTAMP_HEADER: "1714521600"},
        {SIGNATURE_HEADER: "%%%not base64%%%", TIMESTAMP_HEADER: "1714521600"},
        {SIGNATURE_HEADER: "AAAA", TIMESTAMP_HEADER: "1714521600"},
        {SIGNATURE_HEADER: "AAAA", TIMESTAMP_HEADER: "yesterday"},
    ],
)
async def test_missing_or_garbled_signature_headers_fail(
    key: ec.EllipticCurvePrivateKey, headers: dict[str, str]
) -> None:
    parser = SendGridWebhookParser(public_key=public_b64(key))
    with pytest.raises(SignatureInvalid):
        await parser.verify(headers, b"[]", datetime(2024, 5, 1, tzinfo=UTC))


async def test_without_a_key_or_with_verification_off_nothing_is_checked(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    unconfigured = build_parser("sendgrid", Settings())
    assert not unconfigured.authenticates
    await unconfigured.verify({}, b"[]", datetime.now(UTC))
    off = build_parser(
        "sendgrid", Settings(sendgrid_webhook_public_key=public_b64(key), webhook_verify=False)
    )
    assert not off.authenticates
    await off.verify({}, b"[]", datetime.now(UTC))


# --- fixtures --------------------------------------------------------------------------------------------

MID = "14c5d75ce93.dfd.64b469"  # the X-Message-Id part of 14c5d75ce93.dfd.64b469.filter0001...
SECOND = datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)
IE6 = "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)"
CATS = ("cat facts",)

# fixture -> list of (type, bounce type, email, message id, event id, occurred at, other expected attributes)
EXPECTED: dict[str, list[tuple[EventType, BounceType | None, str, str, str | None, datetime, dict[str, Any]]]] = {
    "sendgrid__batch_mixed.json": [
        (EventType.DEFERRED, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"reason": "400 try again later", "tags": CATS}),
        (EventType.DELIVERED, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"tags": CATS}),
        (EventType.OPEN, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"user_agent": IE6, "ip": "255.255.255.255"}),
        (EventType.CLICK, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"url": "http://www.sendgrid.com/", "user_agent": IE6, "ip": "255.255.255.255"}),
        (EventType.BOUNCE, BounceType.HARD, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"reason": "500 unknown recipient"}),
        (EventType.DROPPED, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"reason": "Bounced Address"}),
        (EventType.COMPLAINT, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {}),
        (EventType.UNSUBSCRIBE, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"raw_event": "unsubscribe"}),
        (EventType.UNSUBSCRIBE, None, "example@test.com", "sg_message_id", "sg_event_id", SECOND, {"raw_event": "group_unsubscribe", "url": "http://www.sendgrid.com/", "ip": "255.255.255.255"}),
    ],
    "sendgrid__bounce.json": [
        (EventType.BOUNCE, BounceType.HARD, "example@test.com", MID, "6g4ZI7SA-xmRDv57GoPIPw==", SECOND, {"reason": "500 unknown recipient", "tags": CATS}),
    ],
    "sendgrid__bounce_blocked.json": [
        (EventType.BOUNCE, BounceType.SOFT, "example@test.com", MID, "6g4ZI7SA-xmRDv57GoPIPw==", SECOND, {"reason": "500 unknown recipient"}),
    ],
    "sendgrid__click.json": [
        (EventType.CLICK, None, "example@test.com", MID, "kCAi1KttyQdEKHhdC-nuEA==", SECOND, {"url": "http://www.sendgrid.com/", "user_agent": IE6, "ip": "255.255.255.255", "tags": CATS}),
    ],
    "sendgrid__click_custom_args_full.json": [
        (EventType.CLICK, None, "email@example.com", "sendgrid_internal_message_id", "sendgrid_internal_event_id", datetime(2009, 8, 11, tzinfo=UTC), {
            "url": "http://yourdomain.com/blog/news.html",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53",
            "ip": "255.255.255.255",
            "metadata": {"unique_arg_key": "unique_arg_value"},
            "tags": ("category1", "category2"),
        }),
    ],
    "sendgrid__click_unique_args.json": [
        (EventType.CLICK, None, "john.doe@sendgrid.com", "sendgrid_internal_message_id", None, datetime(2012, 5, 25, 17, 26, 55, tzinfo=UTC), {
            "url": "https://sendgrid.com", "metadata": {"userid": "1123", "template": "welcome"}, "tags": (),
        }),
    ],
    "sendgrid__deferred.json": [
        (EventType.DEFERRED, None, "example@test.com", MID, "t7LEShmowp86DTdUW8M-GQ==", SECOND, {"reason": "400 try again later"}),
    ],
    "sendgrid__delivered.json": [
        (EventType.DELIVERED, None, "example@test.com", MID, "rWVYmVk90MjZJ9iohOBa3w==", SECOND, {"tags": CATS}),
    ],
    "sendgrid__dropped.json": [
        (EventType.DROPPED, None, "example@test.com", MID, "zmzJhfJgAfUSOW80yEbPyw==", SECOND, {"reason": "Bounced Address"}),
    ],
    "sendgrid__group_resubscribe.json": [],
    "sendgrid__group_unsubscribe.json": [
        (EventType.UNSUBSCRIBE, None, "example@test.com", MID, "ahSCB7xYcXFb-hEaawsPRw==", SECOND, {"url": "http://www.sendgrid.com/", "user_agent": IE6, "ip": "255.255.255.255"}),
    ],
    "sendgrid__open.json": [
        (EventType.OPEN, None, "example@test.com", MID, "FOTFFO0ecsBE-zxFXfs6WA==", SECOND, {"user_agent": IE6, "ip": "255.255.255.255"}),
    ],
    "sendgrid__open_singlesend.json": [
        # The docs example gives milliseconds; SendGrid-reserved marketing keys are not custom args.
        (EventType.OPEN, None, "email@example.com", "sendgrid_internal_message_id", "sendgrid_internal_event_id", datetime(2020, 6, 9, 18, 19, 12, 372000, tzinfo=UTC), {"user_agent": IE6, "ip": "127.0.0.1", "metadata": {}, "tags": ()}),
    ],
    "sendgrid__processed.json": [],
    "sendgrid__spamreport.json": [
        (EventType.COMPLAINT, None, "example@test.com", MID, "37nvH5QBz858KGVYCM4uOA==", SECOND, {}),
    ],
    "sendgrid__unsubscribe.json": [
        (EventType.UNSUBSCRIBE, None, "example@test.com", MID, "zz_BjPgU_5pS-J8vlfB1sg==", SECOND, {}),
    ],
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    names = {p.name for p in FIXTURES.glob("sendgrid__*.json")} - {"sendgrid__signed_example.json"}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture(key: ec.EllipticCurvePrivateKey, name: str) -> None:
    body = fixture_bytes(name)
    now = datetime(2024, 5, 1, tzinfo=UTC)
    parser = SendGridWebhookParser(public_key=public_b64(key))
    result = await receive(parser, signed_headers(key, body, int(now.timestamp())), body, now)
    expected = EXPECTED[name]
    assert len(result.events) == len(expected)
    for event, (type_, bounce_type, email, mid, event_id, occurred, extra) in zip(
        result.events, expected, strict=True
    ):
        assert event.type is type_
        assert event.bounce_type is bounce_type
        assert event.email == email
        assert event.provider == "sendgrid"
        assert event.provider_message_id == mid
        if event_id is None:
            assert event.provider_event_id.startswith("h:")
        else:
            assert event.provider_event_id == event_id
        assert event.occurred_at == occurred
        assert event.metadata == extra.get("metadata", {})
        for attribute in ("url", "user_agent", "ip", "reason", "tags", "raw_event"):
            if attribute in extra:
                assert getattr(event, attribute) == extra[attribute], attribute
    # The docs batch reuses one placeholder event id; the dedupe key still tells its events apart.
    assert len({e.dedupe_key for e in result.events}) == len(result.events)


def test_derived_event_id_is_stable_across_retries() -> None:
    parser = SendGridWebhookParser(public_key=None)
    body = fixture_bytes("sendgrid__click_unique_args.json")
    assert parser.parse({}, body)[0].provider_event_id == parser.parse({}, body)[0].provider_event_id


# --- robustness ------------------------------------------------------------------------------------------


def parse(events: Any) -> list[Any]:
    return SendGridWebhookParser(public_key=None).parse({}, json.dumps(events).encode())


def test_single_object_instead_of_array() -> None:
    [event] = parse({"event": "delivered", "email": "A@X.io", "timestamp": 1700000000})
    assert event.email == "a@x.io"
    assert event.occurred_at == at(1700000000)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1700000000", at(1700000000)),
        (1700000000.5, at(1700000000.5)),
        ("2023-11-14T22:13:20Z", at(1700000000)),
        ("2023-11-14T23:13:20+01:00", at(1700000000)),
    ],
)
def test_numeric_string_float_and_iso_timestamps(raw: Any, expected: datetime) -> None:
    assert parse([{"event": "open", "email": "a@x.io", "timestamp": raw}])[0].occurred_at == expected


def test_missing_timestamp_falls_back_to_receipt_time() -> None:
    before = datetime.now(UTC)
    [event] = parse([{"event": "open", "email": "a@x.io"}])
    assert before - timedelta(seconds=1) <= event.occurred_at <= datetime.now(UTC)


def test_bad_entries_are_skipped_not_fatal() -> None:
    events = parse(
        [
            "not an object",
            {"event": "delivered"},  # no email
            {"event": "delivered", "email": "nonsense"},
            {"event": "machine_learning_thing", "email": "a@x.io"},
            {"email": "a@x.io"},
            {"event": "bounce", "email": "b@x.io", "timestamp": 1700000000, "type": "bounce"},
        ]
    )
    assert [(e.type, e.email) for e in events] == [(EventType.BOUNCE, "b@x.io")]


def test_custom_args_nested_or_flat_carry_our_correlation() -> None:
    [flat] = parse(
        [{"event": "open", "email": "a@x.io", META_DELIVERY: "11", META_CAMPAIGN: 3, "attempt": "1"}]
    )
    assert (flat.delivery_ref, flat.campaign_ref) == ("11", "3")
    [nested] = parse(
        [
            {
                "event": "open",
                "email": "a@x.io",
                "custom_args": {META_SUBSCRIBER: "5"},
                "unique_args": {"x": [1]},
            }
        ]
    )
    assert nested.metadata == {META_SUBSCRIBER: "5", "x": "[1]"}


def test_message_id_keeps_the_x_message_id_part() -> None:
    assert (
        message_id("W-yoJ6mXRI2l6M6w4nlnqQ.filterdrecv-p3mdw1-7585b8fc74-mw2k9-18-5F5FC76C-9.0")
        == "W-yoJ6mXRI2l6M6w4nlnqQ"
    )
    assert (
        message_id("6t5kPn4aRkm7cbxRumTNxg.recvd-5f8b8c9d7-x2x8d-1-64A8B3D1-1.0") == "6t5kPn4aRkm7cbxRumTNxg"
    )
    assert message_id("plainid") == "plainid"


@pytest.mark.parametrize("body", [b"", b"nope", b'"string"', b"42", b"null", b"\xff"])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        SendGridWebhookParser(public_key=None).parse({}, body)


def test_empty_batch_is_fine() -> None:
    assert SendGridWebhookParser(public_key=None).parse({}, b"[]") == []
