"""Brevo webhooks: optional Basic credentials, event names, timestamps, metadata, and every fixture."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.domain.ports.webhooks import META_DELIVERY, MalformedPayload, SignatureInvalid
from emailkit.providers.webhooks import build_parser, receive
from emailkit.providers.webhooks.brevo import BrevoWebhookParser
from emailkit.settings import Settings

# Copies of ../shared/fixtures/webhooks (real provider payloads), so a fresh clone tests on its own.
FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- credentials -----------------------------------------------------------------------------------------


async def test_basic_credentials_when_configured() -> None:
    p = build_parser("brevo", Settings(brevo_webhook_username="brevo", brevo_webhook_password="pw"))
    assert p.authenticates
    await p.verify(basic("brevo", "pw"), b"{}", NOW)
    for headers in ({}, basic("brevo", "px"), basic("other", "pw"), {"Authorization": "Bearer pw"}):
        with pytest.raises(SignatureInvalid):
            await p.verify(headers, b"{}", NOW)


async def test_no_credentials_configured_accepts_anything() -> None:
    p = build_parser("brevo", Settings())
    assert not p.authenticates
    await p.verify({}, b"{}", NOW)


# --- fixtures --------------------------------------------------------------------------------------------

CUSTOM = {"X-Mailin-custom": "some_custom_header"}
TRANSAC = ("transac_messages",)

# fixture -> (type, bounce type, email, message id, occurred at, other expected attributes); None = no event
EXPECTED: dict[str, tuple[EventType, BounceType | None, str, str, str, dict[str, Any]] | None] = {
    "brevo__blocked.json": (EventType.DROPPED, None, "example@gmail.com", "<202305311400.29297141656@smtp-relay.mailin.fr>", "2023-05-31T14:00:08.993Z", {"tags": ("tag1", "tag2"), "reason": "blocked : due to unsubscribed user"}),
    "brevo__click.json": (EventType.CLICK, None, "example@gmail.com", "<202305311408.17112967225@smtp-relay.mailin.fr>", "2023-05-31T14:08:28.462Z", {"url": "https://www.google.com", "tags": ("welcome", "tag2")}),
    "brevo__complaint.json": (EventType.COMPLAINT, None, "example@gmail.com", "<201798300811.5787683@smtp-relay.mailin.fr>", "2020-11-09T14:54:14Z", {"metadata": CUSTOM, "tags": TRANSAC}),
    "brevo__deferred.json": (EventType.DEFERRED, None, "example@domain.com", "<202305311400.29297141656@smtp-relay.mailin.fr>", "2020-11-09T14:54:14Z", {"metadata": CUSTOM, "tags": TRANSAC, "reason": "spam"}),
    "brevo__delivered.json": (EventType.DELIVERED, None, "example@gmail.com", "<202305311328.81899448177@smtp-relay.mailin.fr>", "2023-05-31T13:28:33.018Z", {"tags": ("tag1", "tag2"), "reason": "sent"}),
    "brevo__hard_bounce.json": (EventType.BOUNCE, BounceType.HARD, "example@gmail.com", "<202305311437.85220493321@smtp-relay.mailin.fr>", "2023-05-31T14:37:07.372Z", {"tags": ("welcome", "tag2")}),
    "brevo__invalid_email.json": (EventType.DROPPED, None, "example@gmail.com", "<201798300811.5787683@smtp-relay.mailin.fr>", "2020-11-09T14:54:14Z", {"metadata": CUSTOM, "tags": TRANSAC}),
    "brevo__opened.json": (EventType.OPEN, None, "example@gmail.com", "<202305311408.17112967225@smtp-relay.mailin.fr>", "2023-05-31T14:45:09.368Z", {"url": None, "tags": ("welcome", "tag2")}),
    "brevo__proxy_open.json": (EventType.OPEN, None, "example@gmail.com", "<201798300811.5787683@relay.domain.com>", "2020-11-09T14:54:14Z", {"tags": ("transactionalTag",)}),
    "brevo__request.json": None,
    "brevo__soft_bounce.json": (EventType.BOUNCE, BounceType.SOFT, "example@gmail.com", "<201798300811.5787683@smtp-relay.mailin.fr>", "2020-11-09T14:54:14Z", {"metadata": CUSTOM, "tags": TRANSAC, "reason": "server is down"}),
    "brevo__unique_opened.json": (EventType.OPEN, None, "example@gmail.com", "<202305311447.66548003588@smtp-relay.mailin.fr>", "2023-05-31T14:48:52.962Z", {"tags": ("welcome", "tag2")}),
    "brevo__unsubscribed.json": (EventType.UNSUBSCRIBE, None, "example@gmail.com", "<202305311328.81899448177@smtp-relay.mailin.fr>", "2023-05-31T13:52:01.606Z", {"tags": ("tag1", "tag2")}),
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    assert {p.name for p in FIXTURES.glob("brevo__*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture(name: str) -> None:
    p = BrevoWebhookParser(username="brevo", password="pw")
    result = await receive(p, basic("brevo", "pw"), fixture_bytes(name), NOW)
    expected = EXPECTED[name]
    if expected is None:
        assert result.events == []
        return
    type_, bounce_type, email, mid, occurred, extra = expected
    [event] = result.events
    assert event.type is type_
    assert event.bounce_type is bounce_type
    assert event.email == email
    assert event.provider == "brevo"
    assert event.provider_message_id == mid
    assert event.occurred_at == datetime.fromisoformat(occurred)
    assert event.metadata == extra.get("metadata", {})
    assert event.provider_event_id.startswith("h:")
    for attribute in ("url", "tags", "reason"):
        if attribute in extra:
            assert getattr(event, attribute) == extra[attribute], attribute


def test_events_sharing_the_webhook_id_get_distinct_event_ids() -> None:
    p = BrevoWebhookParser(username=None, password=None)
    ids = {
        p.parse({}, fixture_bytes(n))[0].provider_event_id
        for n in ("brevo__opened.json", "brevo__click.json", "brevo__delivered.json")
    }
    assert len(ids) == 3


# --- robustness ------------------------------------------------------------------------------------------


def parse(item: Any) -> list[Any]:
    return BrevoWebhookParser(username=None, password=None).parse({}, json.dumps(item).encode())


def test_batched_array_is_accepted() -> None:
    events = parse(
        [
            {"event": "delivered", "email": "a@x.io", "ts_event": 1700000000},
            {"event": "request", "email": "a@x.io", "ts_event": 1700000000},
            {"event": "spam", "email": "B@X.io", "ts_event": 1700000001},
        ]
    )
    assert [(e.type, e.email) for e in events] == [
        (EventType.DELIVERED, "a@x.io"),
        (EventType.COMPLAINT, "b@x.io"),
    ]


def test_json_custom_header_becomes_metadata_with_our_ids() -> None:
    [event] = parse(
        {
            "event": "opened",
            "email": "a@x.io",
            "X-Mailin-custom": json.dumps({META_DELIVERY: 15, "campaign": "c"}),
        }
    )
    assert event.metadata == {META_DELIVERY: "15", "campaign": "c"}
    assert event.delivery_ref == "15"


def test_tags_from_the_tag_string_when_no_list() -> None:
    assert parse({"event": "opened", "email": "a@x.io", "tag": '["a","b"]'})[0].tags == ("a", "b")
    assert parse({"event": "opened", "email": "a@x.io", "tag": "plain"})[0].tags == ("plain",)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ts_epoch": 1700000000123, "ts_event": 1}, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        ({"ts_epoch": 1700000000, "ts_event": 1600000000}, datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)),
        ({"ts": 1700000000}, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ({"ts_event": "1700000000"}, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_timestamp_sources(fields: dict[str, Any], expected: datetime) -> None:
    assert (
        parse({"event": "delivered", "email": "a@x.io", "date": "2001-01-01 00:00:00", **fields})[
            0
        ].occurred_at
        == expected
    )


def test_marketing_webhook_names_and_unknown_events() -> None:
    assert [e.type for e in parse({"event": "unsubscribe", "email": "a@x.io", "camp_id": 3})] == [
        EventType.UNSUBSCRIBE
    ]
    assert [e.type for e in parse({"event": "error", "email": "a@x.io"})] == [EventType.DROPPED]
    assert parse({"event": "list_addition", "email": "a@x.io"}) == []
    assert parse({"event": "delivered"}) == []


@pytest.mark.parametrize("body", [b"", b"event=delivered", b"true", b'"x"'])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        BrevoWebhookParser(username=None, password=None).parse({}, body)
