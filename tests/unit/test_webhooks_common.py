"""The normalised event, shared parsing helpers, replay memory, the registry and the webhook settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from starlette.datastructures import Headers

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    MalformedPayload,
    NormalizedEvent,
    SignatureInvalid,
    VerificationUnavailable,
    WebhookError,
)
from emailkit.providers.webhooks import (
    FACTORIES,
    MemorySeenTokens,
    UnknownProvider,
    WebhookConfigError,
    build_parser,
    build_parsers,
)
from emailkit.providers.webhooks.common import address, check_age, header, parse_time
from emailkit.settings import Settings


def event(**overrides: Any) -> NormalizedEvent:
    values: dict[str, Any] = {
        "type": EventType.OPEN,
        "email": "a@x.io",
        "provider": "sendgrid",
        "occurred_at": datetime(2024, 1, 1, tzinfo=UTC),
        "raw_event": "open",
        "provider_event_id": "e1",
    }
    return NormalizedEvent(**{**values, **overrides})


# --- NormalizedEvent -------------------------------------------------------------------------------------


def test_email_is_lower_cased_and_time_converted_to_utc() -> None:
    e = event(
        email="  Some.One@Example.COM ",
        occurred_at=datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
    )
    assert e.email == "some.one@example.com"
    assert e.occurred_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert e.occurred_at.tzinfo is UTC


def test_naive_time_empty_email_and_misplaced_bounce_type_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        event(occurred_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="email"):
        event(email=" ")
    with pytest.raises(ValueError, match="bounce"):
        event(type=EventType.BOUNCE)
    with pytest.raises(ValueError, match="bounce"):
        event(type=EventType.OPEN, bounce_type=BounceType.HARD)
    assert event(type=EventType.BOUNCE, bounce_type=BounceType.SOFT).bounce_type is BounceType.SOFT


def test_events_are_immutable_and_hashable_despite_metadata() -> None:
    e = event(metadata={"k": "v"})
    with pytest.raises(AttributeError):
        e.email = "b@x.io"  # type: ignore[misc]
    assert hash(e) == hash(event(metadata={"other": "x"}))
    assert e == event(metadata={"k": "v"})


def test_dedupe_key_is_stable_and_separates_what_differs() -> None:
    base = event()
    assert base.dedupe_key == event().dedupe_key
    assert len(base.dedupe_key) == 32
    assert base.dedupe_key == event(occurred_at=datetime(2030, 1, 1, tzinfo=UTC), url="x").dedupe_key
    for changed in (
        event(email="b@x.io"),
        event(raw_event="click", type=EventType.CLICK),
        event(provider_event_id="e2"),
        event(provider="mailgun"),
    ):
        assert changed.dedupe_key != base.dedupe_key


def test_correlation_refs_read_our_metadata_keys() -> None:
    e = event(metadata={"emailkit_delivery": "1", "emailkit_campaign": "2", "emailkit_subscriber": "3"})
    assert (e.delivery_ref, e.campaign_ref, e.subscriber_ref) == ("1", "2", "3")
    assert event().delivery_ref is None


def test_error_status_codes() -> None:
    assert SignatureInvalid("x").status_code == 401
    assert MalformedPayload("x").status_code == 400
    assert VerificationUnavailable("x").status_code == 503
    assert all(
        issubclass(c, WebhookError) for c in (SignatureInvalid, MalformedPayload, VerificationUnavailable)
    )


# --- helpers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1700000000123, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        (1521472262.000002, datetime(2018, 3, 19, 15, 11, 2, 2, tzinfo=UTC)),
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20Z", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2022-09-02T14:29:19.1234567Z", datetime(2022, 9, 2, 14, 29, 19, 123456, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
        ([1], None),
        (float("nan"), None),
        (10**30, None),
    ],
)
def test_parse_time(raw: Any, expected: datetime | None) -> None:
    assert parse_time(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A@X.io", "a@x.io"),
        ("Alice <Alice@Example.com>", "alice@example.com"),
        ("<bob@x.io>", "bob@x.io"),
        ('"Doe, Jane" <jane@x.io>', "jane@x.io"),
        ("not an address", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_address(raw: Any, expected: str | None) -> None:
    assert address(raw) == expected


def test_header_lookup_is_case_insensitive_for_dicts_and_starlette_headers() -> None:
    assert (
        header({"X-Twilio-Email-Event-Webhook-Timestamp": "1"}, "x-twilio-email-event-webhook-timestamp")
        == "1"
    )
    assert header({"svix-id": "m"}, "Svix-Id") == "m"
    assert header(Headers({"SVIX-ID": "m"}), "svix-id") == "m"
    assert header({}, "svix-id") is None


def test_check_age() -> None:
    now = datetime.fromtimestamp(1_000_000, UTC)
    assert check_age("1000300", now, 300) == 1_000_300
    assert check_age(" 999700 ", now, 300) == 999_700
    assert check_age("1", now, 0) == 1
    for bad in ("1000301", "999699"):
        with pytest.raises(SignatureInvalid):
            check_age(bad, now, 300)
    for garbage in (None, "", "1e6", "abc"):
        with pytest.raises(SignatureInvalid):
            check_age(garbage, now, 0)


async def test_memory_seen_tokens_remembers_until_expiry() -> None:
    seen = MemorySeenTokens()
    assert await seen.remember("t1", 60)
    assert not await seen.remember("t1", 60)
    assert await seen.remember("t2", 60)
    assert await seen.remember("gone", 0)
    assert await seen.remember("gone", 0)  # expired at once


async def test_memory_seen_tokens_stays_bounded_and_keeps_recent_tokens() -> None:
    seen = MemorySeenTokens(max_entries=8)
    for i in range(100):
        assert await seen.remember(f"t{i}", 3600)
    assert len(seen._expires) <= 8
    assert not await seen.remember("t99", 3600)


# --- registry and settings -------------------------------------------------------------------------------


def test_every_provider_is_registered() -> None:
    parsers = build_parsers(Settings())
    assert set(parsers) == set(FACTORIES) == {"ses", "sendgrid", "mailgun", "postmark", "brevo", "resend"}
    assert all(p.provider == name for name, p in parsers.items())
    # Only SES checks anything without a configured key (its key arrives with each message).
    assert {name for name, p in parsers.items() if p.authenticates} == {"ses"}


def test_unknown_provider() -> None:
    with pytest.raises(UnknownProvider):
        build_parser("sparkpost", Settings())
    assert issubclass(UnknownProvider, KeyError)


def test_unusable_keys_fail_when_the_parser_is_built() -> None:
    with pytest.raises(WebhookConfigError, match="EMAILKIT_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        build_parser("sendgrid", Settings(sendgrid_webhook_public_key="incorrect"))
    with pytest.raises(WebhookConfigError, match="EMAILKIT_RESEND_WEBHOOK_SECRET"):
        build_parser("resend", Settings(resend_webhook_secret="whsec_***"))


def test_webhook_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "EMAILKIT_SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:1:a, arn:aws:sns:eu-west-1:1:b,",
        "EMAILKIT_SNS_CERT_DIR": str(tmp_path),
        "EMAILKIT_WEBHOOK_TOLERANCE_SECONDS": "0",
        "EMAILKIT_WEBHOOK_VERIFY": "false",
        "EMAILKIT_MAILGUN_WEBHOOK_SIGNING_KEY": "key-1",
        "EMAILKIT_RESEND_WEBHOOK_SECRET": "whsec_AAAA",
        "EMAILKIT_POSTMARK_WEBHOOK_USERNAME": "pm",
        "EMAILKIT_POSTMARK_WEBHOOK_PASSWORD": "pm-pw",
        "EMAILKIT_BREVO_WEBHOOK_USERNAME": "bv",
        "EMAILKIT_BREVO_WEBHOOK_PASSWORD": "bv-pw",
        "EMAILKIT_SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkw...",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.sns_topic_arns == ["arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b"]
    assert s.sns_cert_dir == tmp_path
    assert s.webhook_tolerance_seconds == 0
    assert s.webhook_verify is False
    assert s.sendgrid_webhook_public_key == "MFkw..."
    assert s.postmark_webhook_username == "pm"
    assert s.brevo_webhook_username == "bv"
    for secret, value in [
        (s.mailgun_webhook_signing_key, "key-1"),
        (s.resend_webhook_secret, "whsec_AAAA"),
        (s.postmark_webhook_password, "pm-pw"),
        (s.brevo_webhook_password, "bv-pw"),
    ]:
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == value
        assert value not in repr(s)


def test_webhook_setting_defaults_and_limits() -> None:
    s = Settings()
    assert (s.webhook_verify, s.webhook_tolerance_seconds, s.sns_topic_arns, s.sns_cert_dir) == (
        True,
        300,
        [],
        None,
    )
    with pytest.raises(ValidationError):
        Settings(webhook_tolerance_seconds=-1)


@pytest.mark.parametrize("provider", sorted(FACTORIES))
@pytest.mark.parametrize("body", [b"[" * 100_000, b"\x00\x01", b"{'single': 'quotes'}", b"{" + b'"a":' * 10])
def test_every_parser_reports_unreadable_bodies_as_malformed(provider: str, body: bytes) -> None:
    parser = build_parser(provider, Settings(webhook_verify=False))
    with pytest.raises(MalformedPayload):
        parser.parse({}, body)
