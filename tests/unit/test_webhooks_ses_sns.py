"""SES-over-SNS webhooks, the SNS side: signatures (v1/v2), certificate sources, topics, the real AWS-signed
vectors and control messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    MalformedPayload,
    SignatureInvalid,
    VerificationUnavailable,
)
from emailkit.providers.webhooks import build_parser, receive
from emailkit.providers.webhooks.sns import is_sns_url
from emailkit.settings import Settings
from tests.support.ses_webhooks import (
    CERT_NAME,
    CERT_URL,
    NOW,
    TOPIC,
    encode,
    fixture_bytes,
    fixture_json,
    notification,
    parser,
    sign,
)

# --- signatures with our own key -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_verifies_with_both_signature_versions(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey, version: str
) -> None:
    body = encode(sign(notification({"eventType": "Send", "mail": {}}), signing_key, version))
    await parser(cert_dir).verify({}, body, NOW)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("field", ["Message", "MessageId", "Subject", "Timestamp", "TopicArn"])
async def test_any_signed_field_changed_by_one_byte_fails(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey, version: str, field: str
) -> None:
    envelope = sign(
        notification(fixture_json("ses__message__delivery__event_awsdocs.json")), signing_key, version
    )
    value = envelope[field]
    envelope[field] = value[:-1] + ("X" if value[-1] != "X" else "Y")
    with pytest.raises(SignatureInvalid):
        await parser(cert_dir).verify({}, encode(envelope), NOW)


async def test_subject_is_signed_only_when_present(cert_dir: Path, signing_key: rsa.RSAPrivateKey) -> None:
    envelope = sign(notification("hello", subject=None), signing_key)
    await parser(cert_dir).verify({}, encode(envelope), NOW)
    envelope["Subject"] = "added after signing"
    with pytest.raises(SignatureInvalid):
        await parser(cert_dir).verify({}, encode(envelope), NOW)


async def test_signature_of_the_other_version_fails(cert_dir: Path, signing_key: rsa.RSAPrivateKey) -> None:
    v2 = sign(notification("hello"), signing_key, "2")
    with pytest.raises(SignatureInvalid):
        await parser(cert_dir).verify({}, encode({**v2, "SignatureVersion": "1"}), NOW)


@pytest.mark.parametrize("version", ["3", "", None])
async def test_unknown_signature_version_fails(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey, version: str | None
) -> None:
    envelope = {**sign(notification("hello"), signing_key), "SignatureVersion": version}
    with pytest.raises(SignatureInvalid, match="SignatureVersion"):
        await parser(cert_dir).verify({}, encode(envelope), NOW)


@pytest.mark.parametrize("missing", ["Signature", "SigningCertURL", "Message", "TopicArn", "Timestamp"])
async def test_missing_signed_material_fails(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey, missing: str
) -> None:
    envelope = sign(notification("hello"), signing_key)
    del envelope[missing]
    with pytest.raises(SignatureInvalid):
        await parser(cert_dir).verify({}, encode(envelope), NOW)


async def test_subscription_confirmation_signature_covers_subscribe_url_and_token(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "m-1",
            "Token": "tok",
            "TopicArn": TOPIC,
            "Message": "confirm",
            "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok",
            "Timestamp": "2024-01-01T00:00:00.000Z",
        },
        signing_key,
        "2",
    )
    await parser(cert_dir).verify({}, encode(envelope), NOW)
    for field, value in [("Token", "tok2"), ("SubscribeURL", envelope["SubscribeURL"] + "2")]:
        with pytest.raises(SignatureInvalid):
            await parser(cert_dir).verify({}, encode({**envelope, field: value}), NOW)


async def test_wrong_certificate_fails(tmp_path: Path, signing_key: rsa.RSAPrivateKey) -> None:
    # The AWS certificate under our certificate's name: a real key, but not the one that signed.
    (tmp_path / CERT_NAME).write_text(fixture_json("ses__signed_example.json")["key"]["cert_pem"])
    body = encode(sign(notification("hello"), signing_key))
    with pytest.raises(SignatureInvalid, match="does not match"):
        await parser(tmp_path).verify({}, body, NOW)


async def test_body_that_is_not_an_sns_message_is_refused(cert_dir: Path) -> None:
    with pytest.raises(SignatureInvalid):
        await parser(cert_dir).verify(
            {}, json.dumps(fixture_json("ses__message__send__event_awsdocs.json")).encode(), NOW
        )
    with pytest.raises(MalformedPayload):
        await parser(cert_dir).verify({}, b"not json", NOW)


# --- signing certificate URL and sources -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.amazonaws.com/cert.pem",
        "https://sqs.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://user:pw@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.txt",
        "https://sns.eu-west-1.amazonaws.com/cert.pem?x=.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com\\@evil.example/cert.pem",
    ],
)
async def test_signing_cert_url_outside_sns_is_refused_without_fetching(
    signing_key: rsa.RSAPrivateKey, url: str
) -> None:
    fetched: list[str] = []

    async def fetch(u: str) -> bytes:
        fetched.append(u)
        return b""

    envelope = {**sign(notification("hello"), signing_key), "SigningCertURL": url}
    with pytest.raises(SignatureInvalid, match="SigningCertURL"):
        await parser(fetch_certificate=fetch).verify({}, encode(envelope), NOW)
    assert fetched == []


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_cert_urls_of_every_partition_are_accepted(url: str) -> None:
    assert is_sns_url(url, pem=True)


async def test_certificate_is_fetched_once_then_cached(
    cert_pem: bytes, signing_key: rsa.RSAPrivateKey
) -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return cert_pem

    p = parser(fetch_certificate=fetch)
    for version in ("1", "2", "1"):
        await p.verify({}, encode(sign(notification("hello"), signing_key, version)), NOW)
    assert fetched == [CERT_URL]


async def test_certificate_directory_is_consulted_before_fetching(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    async def fetch(url: str) -> bytes:
        raise AssertionError("the directory holds this certificate")

    await parser(cert_dir, fetch_certificate=fetch).verify(
        {}, encode(sign(notification("x"), signing_key)), NOW
    )


async def test_unavailable_certificate_asks_the_provider_to_retry(
    tmp_path: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    async def fetch(url: str) -> bytes:
        raise OSError("network down")

    body = encode(sign(notification("hello"), signing_key))
    with pytest.raises(VerificationUnavailable) as failure:
        await parser(tmp_path, fetch_certificate=fetch).verify({}, body, NOW)
    assert failure.value.status_code == 503
    with pytest.raises(VerificationUnavailable):
        await parser(tmp_path).verify({}, body, NOW)


async def test_fetched_garbage_is_not_a_certificate(signing_key: rsa.RSAPrivateKey) -> None:
    async def fetch(url: str) -> bytes:
        return b"<html>captive portal</html>"

    with pytest.raises(VerificationUnavailable):
        await parser(fetch_certificate=fetch).verify({}, encode(sign(notification("x"), signing_key)), NOW)


# --- topics ----------------------------------------------------------------------------------------------


async def test_topic_arn_must_be_configured_when_topics_are_listed(
    cert_dir: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    body = encode(sign(notification("hello"), signing_key))
    await parser(cert_dir, topic_arns=[TOPIC, "arn:aws:sns:us-east-1:1:other"]).verify({}, body, NOW)
    await parser(cert_dir, topic_arns=[]).verify({}, body, NOW)
    with pytest.raises(SignatureInvalid, match="TopicArn"):
        await parser(cert_dir, topic_arns=["arn:aws:sns:us-east-1:1:other"]).verify({}, body, NOW)


# --- the real, AWS-signed vectors ------------------------------------------------------------------------


def signed_cases() -> list[dict[str, Any]]:
    data = fixture_json("ses__signed_example.json")
    return [data, *data["additional_cases"]]


@pytest.mark.parametrize("case", signed_cases(), ids=lambda c: c["name"])
async def test_aws_signed_vectors(cert_dir: Path, case: dict[str, Any]) -> None:
    settings = Settings(sns_cert_dir=cert_dir)
    p = build_parser("ses", settings)
    body = case["body"].encode()
    if case["expected_valid"]:
        await p.verify(case["headers"], body, NOW)
        # One changed byte anywhere in the signed Message breaks it.
        envelope = json.loads(body)
        envelope["Message"] = envelope["Message"].replace("o", "0", 1)
        with pytest.raises(SignatureInvalid):
            await p.verify(case["headers"], encode(envelope), NOW)
    else:
        with pytest.raises(SignatureInvalid):
            await p.verify(case["headers"], body, NOW)


async def test_real_bounce_envelope_verifies_and_normalises(cert_dir: Path) -> None:
    body = fixture_bytes("ses__bounce_permanent__event.json")
    p = build_parser(
        "ses",
        Settings(
            sns_cert_dir=cert_dir, sns_topic_arns="arn:aws:sns:eu-central-1:573964052742:keila_notifications"
        ),
    )
    result = await receive(p, {"x-amz-sns-message-type": "Notification"}, body, NOW)
    assert result.confirmation is None
    [event] = result.events
    assert event.type is EventType.BOUNCE
    assert event.bounce_type is BounceType.HARD
    assert event.email == "bounce@simulator.amazonses.com"
    assert event.provider == "ses"
    assert event.provider_message_id == "0107017cda9fa5c6-be6757c7-8954-4f49-bea4-259cb6e602de-000000"
    assert event.occurred_at == datetime(2021, 11, 1, 8, 31, 9, 745000, tzinfo=UTC)
    assert event.provider_event_id == "e2857e84-192d-54ff-9477-277db1208553"
    assert event.reason == "smtp; 550 5.1.1 user unknown"
    assert event.raw_event == "Bounce"
    assert event.metadata == {}  # only ses:* system tags


async def test_real_subscription_confirmation_yields_the_subscribe_url(cert_dir: Path) -> None:
    body = fixture_bytes("ses__sns_subscription_confirmation.json")
    result = await receive(build_parser("ses", Settings(sns_cert_dir=cert_dir)), {}, body, NOW)
    assert result.events == []
    assert result.confirmation is not None
    assert (
        result.confirmation.subscribe_url
        == fixture_json("ses__sns_subscription_confirmation.json")["SubscribeURL"]
    )
    assert result.confirmation.topic_arn == "arn:aws:sns:eu-central-1:573964052742:keila_notifications"


async def test_subscription_confirmation_for_another_topic_is_refused(cert_dir: Path) -> None:
    body = fixture_bytes("ses__sns_subscription_confirmation.json")
    p = build_parser("ses", Settings(sns_cert_dir=cert_dir, sns_topic_arns=TOPIC))
    with pytest.raises(SignatureInvalid):
        await receive(p, {}, body, NOW)


async def test_docs_subscription_confirmation_has_a_placeholder_signature(
    tmp_path: Path, cert_pem: bytes
) -> None:
    body = fixture_bytes("ses__sns_subscription_confirmation__awsdocs.json")
    cert_name = fixture_json("ses__sns_subscription_confirmation__awsdocs.json")["SigningCertURL"].rsplit(
        "/", 1
    )[1]
    (tmp_path / cert_name).write_bytes(cert_pem)
    with pytest.raises(SignatureInvalid):
        await receive(build_parser("ses", Settings(sns_cert_dir=tmp_path)), {}, body, NOW)
    # With verification off (local testing) it is still recognised as a confirmation, not an event.
    result = await receive(build_parser("ses", Settings(webhook_verify=False)), {}, body, NOW)
    assert result.events == []
    assert result.confirmation is not None
    assert result.confirmation.subscribe_url.startswith(
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"
    )


async def test_unsubscribe_confirmation_is_acknowledged_without_action() -> None:
    body = fixture_bytes("ses__sns_unsubscribe_confirmation__awsdocs.json")
    result = await receive(parser(verify=False), {}, body, NOW)
    assert result.events == []
    assert result.confirmation is None


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
        "https://attacker.example/?Action=ConfirmSubscription",
        "https://sns.us-west-2.amazonaws.com.attacker.example/",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_subscribe_url_outside_sns_is_never_handed_out(url: str) -> None:
    envelope = fixture_json("ses__sns_subscription_confirmation__awsdocs.json")
    envelope["SubscribeURL"] = url
    # Checked even with verification off, because the server will fetch this URL.
    with pytest.raises(SignatureInvalid, match="SubscribeURL"):
        parser(verify=False).confirmation({}, encode(envelope))


def test_subscription_confirmation_without_subscribe_url_is_malformed() -> None:
    envelope = fixture_json("ses__sns_subscription_confirmation__awsdocs.json")
    del envelope["SubscribeURL"]
    with pytest.raises(MalformedPayload):
        parser(verify=False).confirmation({}, encode(envelope))
