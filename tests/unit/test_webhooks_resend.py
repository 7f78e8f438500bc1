"""Resend webhooks: Svix signatures (published vectors and our own), tolerance, and event mapping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    DELIVERY_HEADER,
    META_CAMPAIGN,
    META_DELIVERY,
    MalformedPayload,
    SignatureInvalid,
)
from emailkit.providers.webhooks import WebhookConfigError, build_parser, receive
from emailkit.providers.webhooks.resend import ResendWebhookParser
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signed_cases() -> list[dict[str, Any]]:
    data = json.loads(fixture_bytes("resend__signed_example.json"))
    return [data, *data["additional_cases"]]


def svix_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def svix_headers(
    body: bytes, timestamp: int, msg_id: str = "msg_2abc", secret: str = SECRET
) -> dict[str, str]:
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": svix_signature(secret, msg_id, timestamp, body),
    }


# --- signatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", signed_cases(), ids=lambda c: c["name"])
async def test_published_vectors(case: dict[str, Any]) -> None:
    body = case["body"].encode()
    now = datetime.fromtimestamp(int(case["headers"]["svix-timestamp"]), UTC)
    p = ResendWebhookParser(secret=case["key"]["signing_secret"])
    if not case["expected_valid"]:
        with pytest.raises(SignatureInvalid):
            await p.verify(case["headers"], body, now)
        return
    await p.verify(case["headers"], body, now)
    for i in (0, len(body) // 2, len(body) - 1):
        tampered = body[:i] + bytes([body[i] ^ 0x20]) + body[i + 1 :]
        with pytest.raises(SignatureInvalid):
            await p.verify(case["headers"], tampered, now)
    with pytest.raises(SignatureInvalid):
        await p.verify({**case["headers"], "svix-id": case["headers"]["svix-id"] + "x"}, body, now)


async def test_symfony_vector_is_the_sent_fixture_and_yields_no_event() -> None:
    case = signed_cases()[0]
    assert case["body"].encode() == fixture_bytes("resend__sent.json")
    p = build_parser(
        "resend", Settings(resend_webhook_secret=case["key"]["signing_secret"], webhook_tolerance_seconds=0)
    )
    result = await receive(p, case["headers"], fixture_bytes("resend__sent.json"), datetime.now(UTC))
    assert result.events == []


async def test_tolerance_window() -> None:
    body = b'{"type":"email.delivered"}'
    now = datetime(2024, 6, 1, tzinfo=UTC)
    ts = int(now.timestamp())
    p = ResendWebhookParser(secret=SECRET, tolerance_seconds=300)
    await p.verify(svix_headers(body, ts - 300), body, now)
    for skew in (-301, 301):
        with pytest.raises(SignatureInvalid, match="window"):
            await p.verify(svix_headers(body, ts + skew), body, now)
    await ResendWebhookParser(secret=SECRET, tolerance_seconds=0).verify(svix_headers(body, 1), body, now)


async def test_any_v1_signature_in_the_list_matches_during_rotation() -> None:
    body = b"{}"
    ts = 1717200000
    now = datetime.fromtimestamp(ts, UTC)
    old = svix_signature("whsec_" + base64.b64encode(b"old-secret").decode(), "msg_1", ts, body)
    good = svix_signature(SECRET, "msg_1", ts, body)
    p = ResendWebhookParser(secret=SECRET)
    headers = {"svix-id": "msg_1", "svix-timestamp": str(ts)}
    await p.verify({**headers, "svix-signature": f"{old} {good}"}, body, now)
    # Only v1 entries count: the right digest under another version label is not accepted.
    with pytest.raises(SignatureInvalid):
        await p.verify({**headers, "svix-signature": f"{old} v2,{good.split(',', 1)[1]}"}, body, now)


async def test_unbranded_standard_webhook_headers_are_accepted() -> None:
    body = b"{}"
    ts = 1717200000
    headers = {k.replace("svix-", "webhook-"): v for k, v in svix_headers(body, ts).items()}
    await ResendWebhookParser(secret=SECRET).verify(headers, body, datetime.fromtimestamp(ts, UTC))


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_missing_headers_fail(missing: str) -> None:
    headers = svix_headers(b"{}", 1717200000)
    del headers[missing]
    with pytest.raises(SignatureInvalid):
        await ResendWebhookParser(secret=SECRET).verify(
            headers, b"{}", datetime.fromtimestamp(1717200000, UTC)
        )


def test_secret_must_be_base64() -> None:
    with pytest.raises(WebhookConfigError):
        ResendWebhookParser(secret="whsec_not*base64!")
    # The prefix is optional.
    assert ResendWebhookParser(secret=SECRET.removeprefix("whsec_")).authenticates


async def test_unconfigured_or_disabled_checks_nothing() -> None:
    assert not build_parser("resend", Settings()).authenticates
    await build_parser("resend", Settings(resend_webhook_secret=SECRET, webhook_verify=False)).verify(
        {}, b"{}", datetime.now(UTC)
    )


# --- events ----------------------------------------------------------------------------------------------


def payload(type_: str, **data: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "created_at": "2024-11-22T23:41:12.126Z",
        "data": {
            "created_at": "2024-11-22T23:41:11.894719+00:00",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Acme <onboarding@resend.dev>",
            "to": ["Delivered@Resend.dev"],
            "subject": "Sending this example",
            **data,
        },
    }


async def parse_signed(item: Any, msg_id: str = "msg_2abc") -> list[Any]:
    body = json.dumps(item).encode()
    ts = 1732318872
    p = ResendWebhookParser(secret=SECRET)
    result = await receive(p, svix_headers(body, ts, msg_id), body, datetime.fromtimestamp(ts, UTC))
    return result.events


@pytest.mark.parametrize(
    ("type_", "extra", "expected"),
    [
        ("email.sent", {}, None),
        ("email.scheduled", {}, None),
        ("email.delivered", {}, (EventType.DELIVERED, None)),
        ("email.delivery_delayed", {}, (EventType.DEFERRED, None)),
        ("email.delivered_delayed", {}, (EventType.DEFERRED, None)),
        ("email.complained", {}, (EventType.COMPLAINT, None)),
        ("email.opened", {}, (EventType.OPEN, None)),
        ("email.bounced", {}, (EventType.BOUNCE, BounceType.HARD)),
        ("email.bounced", {"bounce": {"type": "Permanent", "subType": "General", "message": "550 no such user"}}, (EventType.BOUNCE, BounceType.HARD)),
        ("email.bounced", {"bounce": {"type": "Transient", "subType": "MailboxFull"}}, (EventType.BOUNCE, BounceType.SOFT)),
        ("email.bounced", {"bounce": {"type": "Undetermined"}}, (EventType.BOUNCE, BounceType.SOFT)),
        ("email.bounced", {"bounce": {"type": "Permanent", "subType": "Suppressed", "message": "The recipient's email address is on the suppression list because it has a recent history of producing hard bounces."}}, (EventType.DROPPED, None)),
        ("email.failed", {"failed": {"reason": "reached_daily_quota"}}, (EventType.DROPPED, None)),
        ("contact.created", {}, None),
    ],
)  # fmt: skip
async def test_event_types(
    type_: str, extra: dict[str, Any], expected: tuple[EventType, BounceType | None] | None
) -> None:
    events = await parse_signed(payload(type_, **extra))
    if expected is None:
        assert events == []
        return
    [event] = events
    assert (event.type, event.bounce_type) == expected
    assert event.email == "delivered@resend.dev"
    assert event.provider == "resend"
    assert event.provider_message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert event.provider_event_id == "msg_2abc"
    assert event.raw_event == type_
    assert event.occurred_at == datetime(2024, 11, 22, 23, 41, 12, 126000, tzinfo=UTC)


async def test_click_details() -> None:
    click = {
        "ipAddress": "122.115.53.11",
        "link": "https://resend.com",
        "timestamp": "2024-11-24T05:00:57.163Z",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    }
    [event] = await parse_signed(payload("email.clicked", click=click))
    assert (event.type, event.url, event.ip, event.user_agent) == (
        EventType.CLICK,
        "https://resend.com",
        "122.115.53.11",
        click["userAgent"],
    )


async def test_bounce_reason_and_display_name_recipient() -> None:
    [event] = await parse_signed(
        payload(
            "email.bounced",
            to=['"Jane" <Jane@Example.com>', "x@y.io"],
            bounce={"type": "Permanent", "message": "550 5.1.1 unknown"},
        )
    )
    assert event.email == "jane@example.com"
    assert event.reason == "550 5.1.1 unknown"


async def test_tags_and_headers_carry_our_correlation() -> None:
    [from_object] = await parse_signed(payload("email.opened", tags={META_CAMPAIGN: "4", "category": "news"}))
    assert from_object.metadata == {META_CAMPAIGN: "4", "category": "news"}
    [from_list] = await parse_signed(
        payload(
            "email.opened",
            tags=[{"name": META_CAMPAIGN, "value": "4"}],
            headers=[{"name": DELIVERY_HEADER.lower(), "value": "99"}],
        )
    )
    assert from_list.metadata == {META_CAMPAIGN: "4", META_DELIVERY: "99"}
    assert (from_list.delivery_ref, from_list.campaign_ref) == ("99", "4")


async def test_without_svix_id_the_event_id_is_derived_and_stable() -> None:
    p = ResendWebhookParser(secret=None)
    body = json.dumps(payload("email.delivered")).encode()
    first, again = p.parse({}, body)[0], p.parse({}, body)[0]
    assert first.provider_event_id.startswith("h:")
    assert first.provider_event_id == again.provider_event_id


def test_missing_fields_yield_no_event_not_an_error() -> None:
    p = ResendWebhookParser(secret=None)
    assert p.parse({}, json.dumps({"type": "email.delivered"}).encode()) == []
    assert p.parse({}, json.dumps({"type": "email.delivered", "data": {"to": []}}).encode()) == []
    assert p.parse({}, json.dumps({"data": {"to": ["a@x.io"]}}).encode()) == []


def test_missing_times_fall_back_to_the_data_time() -> None:
    item = payload("email.delivered")
    del item["created_at"]
    [event] = ResendWebhookParser(secret=None).parse({}, json.dumps(item).encode())
    assert event.occurred_at == datetime(2024, 11, 22, 23, 41, 11, 894719, tzinfo=UTC)


@pytest.mark.parametrize("body", [b"", b"nope", b"1", b'"email.sent"'])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        ResendWebhookParser(secret=None).parse({}, body)
