"""SES-over-SNS webhooks: SNS signatures (v1/v2), certificate sources, control messages, every SES fixture."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    DELIVERY_HEADER,
    META_CAMPAIGN,
    META_DELIVERY,
    MalformedPayload,
    NormalizedEvent,
    SignatureInvalid,
    VerificationUnavailable,
)
from emailkit.providers.webhooks import WebhookDeps, build_parser, receive
from emailkit.providers.webhooks.ses import SesWebhookParser
from emailkit.providers.webhooks.sns import canonical_string, is_sns_url
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
NOW = datetime(2024, 1, 1, tzinfo=UTC)
CERT_NAME = "SimpleNotificationService-0123456789abcdef.pem"
CERT_URL = f"https://sns.eu-west-1.amazonaws.com/{CERT_NAME}"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:emailkit-events"
AWS_CERT_NAME = "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def cert_pem(signing_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2021, 1, 1, tzinfo=UTC))  # expired on purpose: expiry is not enforced
        .sign(signing_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def cert_dir(tmp_path: Path, cert_pem: bytes) -> Path:
    (tmp_path / CERT_NAME).write_bytes(cert_pem)
    (tmp_path / AWS_CERT_NAME).write_text(fixture_json("ses__signed_example.json")["key"]["cert_pem"])
    return tmp_path


def sign(envelope: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, Any]:
    envelope = {**envelope, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical_string(envelope), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def notification(
    message: Any, *, subject: str | None = "Amazon SES Email Event Notification"
) -> dict[str, Any]:
    envelope = {
        "Type": "Notification",
        "MessageId": "5f2a3b4c-0000-4000-8000-000000000001",
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2024-01-01T00:00:00.000Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, indent=2).encode()


def parser(cert_dir: Path | None = None, **kwargs: Any) -> SesWebhookParser:
    return SesWebhookParser(cert_dir=cert_dir, **kwargs)


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


# --- every inner SES message fixture, wrapped in an envelope we sign ------------------------------------

DOCS_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
TAGS_1 = {"myCustomTag1": "myCustomValue1", "myCustomTag2": "myCustomValue2"}
TAGS_2 = {"myCustomTag1": "myCustomTagValue1", "myCustomTag2": "myCustomTagValue2"}
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.90 Safari/537.36"

# fixture -> list of (type, bounce type, email, provider message id, occurred at, other expected attributes)
EXPECTED: dict[str, list[tuple[EventType, BounceType | None, str, str, str, dict[str, Any]]]] = {
    "ses__message__bounce_permanent__event_awsdocs.json": [
        (EventType.BOUNCE, BounceType.HARD, "recipient@example.com", DOCS_ID, "2017-08-05T00:41:02.669Z", {"reason": "smtp; 550 5.1.1 user unknown"}),
    ],
    "ses__message__bounce_permanent__notification_awsdocs.json": [
        (EventType.BOUNCE, BounceType.HARD, "jane@example.com", "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000", "2016-01-27T14:59:38.237Z", {"reason": "smtp; 550 5.1.1 <jane@example.com>... User"}),
    ],
    "ses__message__bounce_permanent_multi__notification_awsdocs.json": [
        (EventType.BOUNCE, BounceType.HARD, "jane@example.com", "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000", "2016-01-27T14:59:38.237Z", {}),
        (EventType.BOUNCE, BounceType.HARD, "richard@example.com", "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000", "2016-01-27T14:59:38.237Z", {}),
    ],
    "ses__message__bounce_transient__notification_simulator.json": [
        (EventType.BOUNCE, BounceType.SOFT, "ooto@simulator.amazonses.com", "0100018264c78eba-a9093e0f-c835-49b7-ae65-36cfc8f953e8-000000", "2022-08-03T17:36:16Z", {}),
    ],
    "ses__message__click__event_awsdocs.json": [
        (EventType.CLICK, None, "recipient@example.com", DOCS_ID, "2017-08-09T23:51:25.57Z", {"url": "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html", "user_agent": CHROME, "ip": "192.0.2.1", "metadata": TAGS_1}),
    ],
    "ses__message__complaint__event_awsdocs.json": [
        (EventType.COMPLAINT, None, "recipient@example.com", DOCS_ID, "2017-08-05T00:41:02.669Z", {"user_agent": CHROME, "reason": "abuse"}),
    ],
    "ses__message__complaint__notification_awsdocs.json": [
        (EventType.COMPLAINT, None, "richard@example.com", "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000", "2016-01-27T14:59:38.237Z", {"user_agent": "AnyCompany Feedback Loop (V0.01)", "reason": "abuse"}),
    ],
    "ses__message__complaint__notification_simulator.json": [
        (EventType.COMPLAINT, None, "complaint@simulator.amazonses.com", "0100018264c99e08-1aae1638-c00a-4c2b-93dd-acf9752adf56-000000", "2022-08-03T17:38:31Z", {"user_agent": "Amazon SES Mailbox Simulator", "reason": "abuse"}),
    ],
    "ses__message__complaint_nofeedback__notification_awsdocs.json": [
        (EventType.COMPLAINT, None, "richard@example.com", "0000013786031775-163e3910-53eb-4c8e-a04a-f29debf88a84-000000", "2016-01-27T14:59:38.237Z", {}),
    ],
    "ses__message__delivery__event_awsdocs.json": [
        (EventType.DELIVERED, None, "recipient@example.com", DOCS_ID, "2016-10-19T23:21:04.133Z", {"metadata": TAGS_2, "reason": "250 2.6.0 Message received"}),
    ],
    "ses__message__delivery__notification_awsdocs.json": [
        (EventType.DELIVERED, None, "jane@example.com", "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000", "2016-01-27T14:59:38.237Z", {"reason": "250 ok:  Message 64111812 accepted"}),
    ],
    "ses__message__deliverydelay__event_awsdocs.json": [
        (EventType.DEFERRED, None, "recipient@example.com", DOCS_ID, "2020-06-16T00:25:40.095Z", {"reason": "smtp; 421 4.4.1 Unable to connect to remote host"}),
    ],
    "ses__message__open__event_awsdocs.json": [
        (EventType.OPEN, None, "recipient@example.com", DOCS_ID, "2017-08-09T22:00:19.652Z", {"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X) AppleWebKit/603.3.8 (KHTML, like Gecko) Mobile/14G60", "ip": "192.0.2.1", "metadata": TAGS_1}),
    ],
    "ses__message__reject__event_awsdocs.json": [
        (EventType.DROPPED, None, "sender@example.com", DOCS_ID, "2016-10-14T17:38:15.211Z", {"metadata": TAGS_2, "reason": "Bad content"}),
    ],
    "ses__message__rendering_failure__event_awsdocs.json": [
        (EventType.DROPPED, None, "recipient@example.com", DOCS_ID, "2018-01-22T18:43:06.197Z", {"reason": "Attribute 'attributeName' is not present in the rendering data."}),
    ],
    "ses__message__send__event_awsdocs.json": [],
    "ses__message__subscription__event_awsdocs.json": [
        (EventType.UNSUBSCRIBE, None, "recipient@example.com", "EXAMPLEe4bccb684-777bc8de-afa7-4970-92b0-f515137b1497-000000", "2022-01-12T01:00:17.91Z", {"metadata": TAGS_1}),
    ],
}  # fmt: skip


def test_every_inner_message_fixture_has_an_expectation() -> None:
    assert {p.name for p in FIXTURES.glob("ses__message__*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_inner_message_fixture(cert_dir: Path, signing_key: rsa.RSAPrivateKey, name: str) -> None:
    # The inner message travels as a JSON string in the envelope, exactly as SNS sends it.
    envelope = sign(notification(fixture_bytes(name).decode()), signing_key, "2")
    result = await receive(parser(cert_dir, topic_arns=[TOPIC]), {}, encode(envelope), NOW)
    expected = EXPECTED[name]
    assert len(result.events) == len(expected)
    for event, (type_, bounce_type, email, message_id, occurred, extra) in zip(
        result.events, expected, strict=True
    ):
        assert event.type is type_
        assert event.bounce_type is bounce_type
        assert event.email == email
        assert event.provider == "ses"
        assert event.provider_message_id == message_id
        assert event.occurred_at == datetime.fromisoformat(occurred)
        assert event.provider_event_id == envelope["MessageId"]
        assert event.metadata == extra.get("metadata", {})
        for attribute in ("url", "user_agent", "ip", "reason"):
            if attribute in extra:
                assert getattr(event, attribute) == extra[attribute], attribute
    assert len({e.dedupe_key for e in result.events}) == len(result.events)


# --- robustness ------------------------------------------------------------------------------------------


def message(
    event_type: str, detail_key: str | None = None, detail: dict[str, Any] | None = None, **mail: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "messageId": "msg-1",
            "destination": ["Someone@Example.COM"],
            "timestamp": "2024-02-02T10:00:00Z",
            **mail,
        },
    }
    if detail_key is not None:
        base[detail_key] = detail or {}
    return base


def parse_inner(inner: Any) -> list[NormalizedEvent]:
    return parser(verify=False).parse({}, encode(notification(inner)))


def test_undetermined_bounce_is_soft() -> None:
    [event] = parse_inner(
        message(
            "Bounce",
            "bounce",
            {"bounceType": "Undetermined", "bouncedRecipients": [{"emailAddress": "a@x.io"}]},
        )
    )
    assert (event.type, event.bounce_type) == (EventType.BOUNCE, BounceType.SOFT)


@pytest.mark.parametrize("subtype", ["Suppressed", "OnAccountSuppressionList"])
def test_bounce_on_a_suppression_list_is_dropped(subtype: str) -> None:
    [event] = parse_inner(
        message(
            "Bounce",
            "bounce",
            {
                "bounceType": "Permanent",
                "bounceSubType": subtype,
                "bouncedRecipients": [{"emailAddress": "a@x.io"}],
            },
        )
    )
    assert (event.type, event.bounce_type) == (EventType.DROPPED, None)


def test_missing_event_timestamp_falls_back_to_envelope_then_mail_time() -> None:
    inner = message("Open", "open", {})
    [event] = parse_inner(inner)
    assert event.occurred_at == datetime(2024, 1, 1, tzinfo=UTC)  # envelope Timestamp
    [raw] = parser(verify=False).parse({}, json.dumps(inner).encode())
    assert raw.occurred_at == datetime(2024, 2, 2, 10, tzinfo=UTC)  # mail.timestamp


def test_recipients_are_lower_cased_and_display_names_removed() -> None:
    [event] = parse_inner(
        message("Click", "click", {"link": "https://x.io"}, destination=['"Some One" <Some.One@Example.COM>'])
    )
    assert event.email == "some.one@example.com"


def test_our_correlation_comes_from_tags_and_the_delivery_header() -> None:
    inner = message(
        "Delivery",
        "delivery",
        {"recipients": ["a@x.io"]},
        tags={META_CAMPAIGN: ["42"], "ses:operation": ["SendRawEmail"]},
        headers=[{"name": DELIVERY_HEADER.upper(), "value": "9001"}],
    )
    [event] = parse_inner(inner)
    assert event.metadata == {META_CAMPAIGN: "42", META_DELIVERY: "9001"}
    assert (event.delivery_ref, event.campaign_ref, event.subscriber_ref) == ("9001", "42", None)


def test_explicit_delivery_tag_wins_over_the_header() -> None:
    inner = message(
        "Delivery",
        "delivery",
        {"recipients": ["a@x.io"]},
        tags={META_DELIVERY: ["7"]},
        headers=[{"name": DELIVERY_HEADER, "value": "8"}],
    )
    assert parse_inner(inner)[0].delivery_ref == "7"


def test_topic_level_opt_out_is_an_unsubscribe_but_an_opt_in_is_not() -> None:
    opt_out = {
        "newTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}],
        },
        "oldTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}],
        },
    }
    assert [e.type for e in parse_inner(message("Subscription", "subscription", opt_out))] == [
        EventType.UNSUBSCRIBE
    ]
    opt_in = {
        "newTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}],
        },
        "oldTopicPreferences": {
            "unsubscribeAll": False,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}],
        },
    }
    assert parse_inner(message("Subscription", "subscription", opt_in)) == []


def test_not_spam_feedback_is_not_a_complaint() -> None:
    inner = {
        "notificationType": "Complaint",
        "complaint": {
            "complaintFeedbackType": "not-spam",
            "complainedRecipients": [{"emailAddress": "a@x.io"}],
        },
        "mail": {"messageId": "m"},
    }
    assert parse_inner(inner) == []


@pytest.mark.parametrize(
    "inner",
    [
        "Hello world",  # a plain-text SNS notification
        {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed"},
        {"eventType": "SomethingNew", "mail": {"destination": ["a@x.io"]}},
        {"eventType": "Bounce", "bounce": {"bouncedRecipients": "not-a-list"}, "mail": {}},
        {"eventType": "Delivery", "mail": {"destination": ["a@x.io"]}},  # no delivery object
        {"eventType": "Open", "mail": {"destination": ["not an address"]}},
        [1, 2, 3],
    ],
)
def test_unknown_or_incomplete_messages_yield_no_event(inner: Any) -> None:
    assert parse_inner(inner) == []


def test_message_given_as_an_object_is_accepted() -> None:
    envelope = notification({})
    envelope["Message"] = message("Open", "open", {"timestamp": "2024-03-03T00:00:00Z"})
    [event] = parser(verify=False).parse({}, encode(envelope))
    assert event.type is EventType.OPEN


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'"text"', b"\xff\xfe", b'{"Type": "Notification"}']
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parser(verify=False).parse({}, body)


async def test_registry_builds_ses_from_settings(cert_dir: Path, signing_key: rsa.RSAPrivateKey) -> None:
    body = encode(sign(notification("hello"), signing_key))
    p = build_parser(
        "ses", Settings(sns_cert_dir=cert_dir, sns_topic_arns=f" {TOPIC} , arn:b "), WebhookDeps()
    )
    assert p.authenticates
    await p.verify({}, body, NOW)
    other = build_parser("ses", Settings(sns_cert_dir=cert_dir, sns_topic_arns="arn:a,arn:b"))
    with pytest.raises(SignatureInvalid):
        await other.verify({}, body, NOW)
    unverified = build_parser("ses", Settings(webhook_verify=False))
    assert not unverified.authenticates
    await unverified.verify({}, b"anything at all", NOW)


def test_timestamps_compare_as_instants() -> None:
    inner = message("Open", "open", {"timestamp": "2017-08-09T22:00:19.6520000+02:00"})
    [event] = parse_inner(inner)
    assert event.occurred_at == datetime(2017, 8, 9, 20, 0, 19, 652000, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
