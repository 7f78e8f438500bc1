"""SES-over-SNS webhooks, the SES side: every inner SES message fixture normalised into events, and robustness
against odd, incomplete or malformed messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import (
    DELIVERY_HEADER,
    META_CAMPAIGN,
    META_DELIVERY,
    MalformedPayload,
    NormalizedEvent,
    SignatureInvalid,
)
from emailkit.providers.webhooks import WebhookDeps, build_parser, receive
from emailkit.settings import Settings
from tests.support.ses_webhooks import (
    FIXTURES,
    NOW,
    TOPIC,
    encode,
    fixture_bytes,
    notification,
    parser,
    sign,
)

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
