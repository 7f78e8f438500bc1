"""The mailgun, postmark, resend and brevo providers against local servers that behave like each provider's
send API (tests/support/provider_apis): documented authentication, request shapes, per-message results,
error bodies, 429 with the provider's rate-limit headers, and 5xx.

Each test runs once per provider; the provider is built the way a sender is (its module's ``from_sender``).
What a fake accepted is turned into that provider's own webhook payload and fed to our webhook parser, which
must name our delivery again.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from typing import Any

import pytest

from emailkit.domain.ports.provider import (
    DELIVERY_HEADER,
    DELIVERY_TAG,
    Address,
    OutgoingMessage,
    SenderConfigError,
)
from emailkit.domain.ports.webhooks import META_CAMPAIGN
from emailkit.providers import brevo as brevo_module
from emailkit.providers import mailgun as mailgun_module
from emailkit.providers import postmark as postmark_module
from emailkit.providers import resend as resend_module
from emailkit.providers.registry import build_provider
from emailkit.settings import Settings, SettingsError
from tests.support.handover import HandoverLog
from tests.support.provider_apis import mailgun, postmark, resend
from tests.support.provider_apis.kits import KITS, Kit, api, environment, provider


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    chosen: Kit = request.param
    return chosen


def message(i: int, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"c9-s{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", f"User {i}"),
        "from_": Address("news@news.example.com", "Example News"),
        "reply_to": Address("replies@news.example.com"),
        "subject": f"Hello {i}",
        "html": f"<p>Hello user {i}</p>",
        "text": f"Hello user {i}",
        "message_id": f"<c9-s{i}@news.example.com>",
        "headers": {
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "News <news.example.com>",
            "Precedence": "bulk",
        },
        "tags": {DELIVERY_TAG: f"c9-s{i}", META_CAMPAIGN: "9"},
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


async def test_a_batch_is_sent_and_each_message_gets_the_providers_id(kit: Kit) -> None:
    messages = [message(i) for i in range(12)]
    async with api(kit) as (url, state), provider(kit, url, pool_size=3) as p:
        results = await p.send_batch(messages)
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.delivery_id for r in results] == [m.delivery_id for m in messages]
    by_recipient = {a.to: a.provider_id for a in state.accepted}
    for m, r in zip(messages, results, strict=True):
        # The id our ledger keeps is the one the provider's events report (Mailgun's without its brackets).
        assert r.provider_message_id == by_recipient[m.recipient]
    assert len(set(by_recipient.values())) == 12
    assert state.requests == -(-12 // kit.per_request)
    assert state.max_in_flight <= 3


async def test_content_and_our_headers_arrive_through_the_api(kit: Kit) -> None:
    async with api(kit) as (url, state), provider(kit, url) as p:
        (result,) = await p.send_batch([message(4, to=Address("jo@example.org", 'Jo "JJ" Doe, Jr.'))])
    assert result.ok, result.error
    (got,) = state.accepted
    assert got.to == "jo@example.org"
    assert got.subject == "Hello 4"
    assert (got.html, got.text) == ("<p>Hello user 4</p>", "Hello user 4")
    assert {k: v for k, v in got.headers.items() if k != "X-Mailin-custom" and k != "Reply-To"} == {
        "List-Unsubscribe": "<https://mail.example.com/u/4>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "News <news.example.com>",
        "Precedence": "bulk",
        "Message-ID": "<c9-s4@news.example.com>",
        DELIVERY_HEADER: "c9-s4",
    }


async def test_the_delivery_tag_round_trips_through_our_webhook_parser(kit: Kit) -> None:
    async with api(kit) as (url, state), provider(kit, url) as p:
        results = await p.send_batch([message(1), message(2)])
    parser = kit.parser()
    for accepted, result in zip(sorted(state.accepted, key=lambda a: a.to), results, strict=True):
        headers, body = kit.webhook(accepted)
        (event,) = parser.parse(headers, body)
        assert event.email == accepted.to
        assert event.delivery_ref == result.delivery_id
        assert event.campaign_ref == "9"
        # Correlation by the provider's id works too: what we stored is what its events report.
        assert event.provider_message_id == result.provider_message_id


async def test_rate_limit_is_transient_and_honours_the_wait_asked_for(kit: Kit) -> None:
    async with api(kit) as (url, _), provider(kit, url) as p:
        (limited,) = await p.send_batch([message(1, to=Address("limited@example.org"))])
        (fine,) = await p.send_batch([message(2)])
    assert fine.ok
    assert not limited.ok and limited.transient
    assert "429" in (limited.error or "")
    if kit.retry_after is None:
        assert limited.retry_after is None
    else:
        assert limited.retry_after == pytest.approx(kit.retry_after, abs=1)


async def test_server_errors_and_a_bad_key_are_transient(kit: Kit) -> None:
    async with api(kit) as (url, _):
        async with provider(kit, url) as p:
            (broken,) = await p.send_batch([message(1, to=Address("broken@example.org"))])
        async with provider(kit, url, key="wrong-key-0000") as p:
            refused = await p.send_batch([message(2), message(3)])
    assert not broken.ok and broken.transient and "500" in (broken.error or "")
    for result in refused:
        # A key no recipient can fix: retried (and the error budget pauses the campaign), not failed for good.
        assert not result.ok and result.transient
        assert (result.error or "").startswith(kit.bad_key_words), result.error


async def test_an_address_the_provider_refuses_fails_only_that_message_for_good(kit: Kit) -> None:
    messages = [message(0), message(1, to=Address("someone@example.invalid")), message(2)]
    async with api(kit) as (url, state), provider(kit, url) as p:
        results = await p.send_batch(messages)
    assert [r.ok for r in results] == [True, False, True]
    assert not results[1].transient
    assert sorted(a.to for a in state.accepted) == ["user0@example.org", "user2@example.org"]


async def test_a_message_that_cannot_be_expressed_is_never_committed_or_sent(kit: Kit) -> None:
    committed: list[str] = []

    async def on_commit(ids: Sequence[str]) -> None:
        committed.extend(ids)

    messages = [message(0), message(1, to=Address("jörg@example.org")), message(2, headers={"Bad Name": "x"})]
    async with api(kit) as (url, state), provider(kit, url) as p:
        results = await p.send_batch(messages, on_commit=on_commit)
    assert [r.ok for r in results] == [True, False, False]
    assert not results[1].transient and "SMTPUTF8" in (results[1].error or "")
    assert not results[2].transient and "invalid header name" in (results[2].error or "")
    assert committed == ["c9-s0"]
    assert [a.to for a in state.accepted] == ["user0@example.org"]


async def test_an_unreachable_api_is_transient(kit: Kit) -> None:
    async with api(kit) as (url, _):
        pass
    async with provider(kit, url) as p:
        results = await p.send_batch([message(1), message(2)])
        probe = await p.probe()
    assert all(not r.ok and r.transient and "request failed" in (r.error or "") for r in results)
    assert not probe.ok and "unreachable" in probe.message


async def test_each_request_is_committed_before_it_arrives_and_reported_before_its_slot_is_reused(
    kit: Kit,
) -> None:
    log = HandoverLog()
    requests = 7
    messages = [message(i) for i in range(kit.per_request * (requests - 1) + 1)]
    async with api(kit) as (url, state), provider(kit, url, pool_size=2) as p:
        state.handover = log
        results = await p.send_batch(messages, on_commit=log.on_commit, on_result=log.on_result)
    assert all(r.ok for r in results)
    worst = log.check(all_ids={m.delivery_id for m in messages}, most_in_doubt=2 * kit.per_request)
    assert worst > kit.per_request  # the two slots did overlap
    arrived = [ids for kind, ids in log.events if kind == "request"]
    assert len(arrived) == requests
    assert sorted(len(ids) for ids in arrived) == [1] + [kit.per_request] * (requests - 1)


async def test_a_refused_commit_stops_the_requests_not_yet_sent(kit: Kit) -> None:
    committed: list[str] = []

    async def on_commit(ids: Sequence[str]) -> None:
        if committed:
            raise RuntimeError("lease lost")
        committed.extend(ids)

    messages = [message(i) for i in range(kit.per_request * 3)]
    async with api(kit) as (url, state), provider(kit, url, pool_size=1) as p:
        with pytest.raises(RuntimeError, match="lease lost"):
            await p.send_batch(messages, on_commit=on_commit)
    assert len(committed) == kit.per_request
    assert sorted(a.to for a in state.accepted) == sorted(m.recipient for m in messages[: kit.per_request])


async def test_probe_reports_the_providers_answer(kit: Kit) -> None:
    async with api(kit) as (url, _):
        async with provider(kit, url) as p:
            good = await p.probe()
        async with provider(kit, url, key="wrong-key-0000") as p:
            bad = await p.probe()
    assert good.ok and " 200: " in good.message, good.message
    assert not bad.ok
    assert bad.message.startswith(kit.bad_key_words.split(":")[0]) and bad.message.count(":") >= 1
    assert "wrong-key" not in bad.message


async def test_settings_switch_to_the_provider_by_environment(kit: Kit) -> None:
    async with api(kit) as (url, state):
        built = build_provider(Settings(**environment(kit, url)))
        try:
            (result,) = await built.send_batch([message(1)])
        finally:
            await built.close()
    assert result.ok, result.error
    assert [a.to for a in state.accepted] == ["user1@example.org"]


def test_a_missing_or_bad_variable_is_named(kit: Kit) -> None:
    fields = environment(kit, "https://user:s3cr3t-pw@api.example.com", key="s3cr3t-key")
    secret = next(name for name in fields if name.endswith(("_api_key", "_server_token")))
    variable = f"EMAILKIT_{secret.upper()}"
    with pytest.raises(SettingsError, match=f"^{variable}: required with EMAILKIT_PROVIDER={kit.name}"):
        build_provider(Settings(**{**fields, secret: None}))
    with pytest.raises(SettingsError) as info:
        build_provider(Settings(**fields))
    assert str(info.value).startswith(f"EMAILKIT_{kit.name.upper()}_BASE_URL: must not carry credentials")
    assert "s3cr3t" not in str(info.value)


def test_mailgun_needs_its_domain() -> None:
    with pytest.raises(
        SettingsError, match=r"^EMAILKIT_MAILGUN_DOMAIN: required with EMAILKIT_PROVIDER=mailgun"
    ):
        build_provider(Settings(provider="mailgun", mailgun_api_key="key-x"))  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=r"^EMAILKIT_MAILGUN_DOMAIN: must be the sending domain"):
        build_provider(
            Settings(provider="mailgun", mailgun_api_key="key-x", mailgun_domain="mg.example.com/../x")
        )  # type: ignore[arg-type]


# -- what only one provider does ---------------------------------------------------------------------------

POSTMARK = next(k for k in KITS if k.name == "postmark")
RESEND = next(k for k in KITS if k.name == "resend")
MAILGUN = next(k for k in KITS if k.name == "mailgun")
BREVO = next(k for k in KITS if k.name == "brevo")


async def test_postmark_maps_each_error_code_inside_a_200_answer_to_its_message() -> None:
    messages = [
        message(0),
        message(1, to=Address(postmark.INACTIVE)),
        message(2, from_=Address("news@elsewhere.example.com")),
        message(3),
    ]
    async with api(POSTMARK) as (url, state), provider(POSTMARK, url) as p:
        results = await p.send_batch(messages)
    assert state.requests == 1
    assert [r.ok for r in results] == [True, False, False, True]
    inactive, unsigned = results[1], results[2]
    # A recipient Postmark will never mail again: failed for good.
    assert not inactive.transient
    assert (inactive.error or "").startswith("Postmark ErrorCode 406: You tried to send to recipient(s)")
    # A From address the account has not confirmed is the account's problem, not the recipient's.
    assert unsigned.transient
    assert (unsigned.error or "").startswith("Postmark ErrorCode 400: The 'From' address you supplied")


async def test_postmark_sends_to_the_configured_stream_and_an_unknown_one_is_an_account_problem() -> None:
    async with api(POSTMARK) as (url, state):
        async with provider(POSTMARK, url, messageStream="broadcast") as p:
            (sent,) = await p.send_batch([message(1)])
        async with provider(POSTMARK, url, messageStream="newsletters") as p:
            (unknown,) = await p.send_batch([message(2)])
    assert sent.ok and state.accepted[0].raw["MessageStream"] == "broadcast"
    assert state.accepted[0].raw["Metadata"] == {DELIVERY_TAG: "c9-s1", META_CAMPAIGN: "9"}
    assert unknown.transient and "ErrorCode 1235" in (unknown.error or "")


async def test_postmark_metadata_keeps_the_delivery_id_within_postmarks_limits() -> None:
    tags = {f"k{i}": "v" for i in range(12)} | {"a_name_longer_than_20": "x", "long": "v" * 81}
    async with api(POSTMARK) as (url, state), provider(POSTMARK, url) as p:
        (result,) = await p.send_batch([message(1, tags=tags)])
    assert result.ok, result.error
    metadata = state.accepted[0].raw["Metadata"]
    assert len(metadata) == 10 and metadata[DELIVERY_TAG] == "c9-s1"


async def test_resend_accepts_a_sending_only_key_and_tags_are_made_valid() -> None:
    async with api(RESEND) as (url, state):
        async with provider(RESEND, url, key=resend.SENDING_ONLY_KEY) as p:
            probe = await p.probe()
            (result,) = await p.send_batch(
                [message(1, tags={DELIVERY_TAG: "c9-s1", "topic": "spring sale!"})]
            )
    assert probe.ok and "restricted_api_key" in probe.message
    assert result.ok, result.error
    assert state.accepted[0].raw["tags"] == [
        {"name": DELIVERY_TAG, "value": "c9-s1"},
        {"name": "topic", "value": "spring_sale_"},
    ]


async def test_mailgun_sends_multipart_form_fields_to_its_domain() -> None:
    async with api(MAILGUN) as (url, state):
        async with provider(MAILGUN, url) as p:
            (sent,) = await p.send_batch([message(1)])
            probe = await p.probe()
        async with provider(MAILGUN, url, domain="other.example.com") as p:
            (unknown,) = await p.send_batch([message(2)])
            unknown_probe = await p.probe()
    assert sent.ok, sent.error
    fields = dict(state.accepted[0].raw)
    assert fields["from"] == "Example News <news@news.example.com>"
    assert fields["to"] == "User 1 <user1@example.org>"
    assert fields["h:Reply-To"] == "replies@news.example.com"
    assert fields[f"v:{DELIVERY_TAG}"] == "c9-s1" and fields[f"v:{META_CAMPAIGN}"] == "9"
    assert probe.ok and probe.message == f"Mailgun 200: domain {mailgun.DOMAIN} is active"
    # A sending domain the account does not have: the account's problem, retried, and the probe says so.
    assert unknown.transient and unknown.error == "Mailgun 404: Domain not found: other.example.com"
    assert not unknown_probe.ok and unknown_probe.message == "Mailgun 404: Domain not found"


async def test_brevo_carries_our_metadata_in_x_mailin_custom() -> None:
    async with api(BREVO) as (url, state), provider(BREVO, url) as p:
        (result,) = await p.send_batch([message(1)])
        probe = await p.probe()
    assert result.ok and (result.provider_message_id or "").endswith("@smtp-relay.mailin.fr>")
    raw = state.accepted[0].raw
    assert raw["sender"] == {"email": "news@news.example.com", "name": "Example News"}
    assert raw["replyTo"] == {"email": "replies@news.example.com"}
    assert json.loads(raw["headers"]["X-Mailin-custom"]) == {DELIVERY_TAG: "c9-s1", META_CAMPAIGN: "9"}
    assert probe.ok and probe.message == "Brevo 200: account owner@example.com"


# -- from_sender -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "settings", "credentials", "pool_size", "field"),
    [
        ("mailgun", {"domain": "mg.example.com"}, {}, 10, "apiKey"),
        ("mailgun", {}, {"apiKey": "k"}, 10, "domain"),
        ("mailgun", {"domain": "mg.example.com/x"}, {"apiKey": "k"}, 10, "domain"),
        ("mailgun", {"domain": "mg.example.com", "region": "eu"}, {"apiKey": "k"}, 10, "region"),
        ("postmark", {}, {"apiKey": "k"}, 10, "apiKey"),
        ("postmark", {}, {}, 10, "serverToken"),
        ("postmark", {"messageStream": ""}, {"serverToken": "t"}, 10, "messageStream"),
        ("postmark", {"baseUrl": "ftp://api.example.com"}, {"serverToken": "t"}, 10, "baseUrl"),
        ("resend", {}, {"apiKey": "  "}, 10, "apiKey"),
        ("resend", {"baseUrl": "https://user:pw@api.example.com"}, {"apiKey": "k"}, 10, "baseUrl"),
        ("resend", {"baseUrl": "api.resend.com"}, {"apiKey": "k"}, 10, "baseUrl"),
        ("resend", {}, {"apiKey": "k"}, 0, "poolSize"),
        ("brevo", {"baseUrl": 42}, {"apiKey": "k"}, 10, "baseUrl"),
        ("brevo", {"baseUrl": "https://api.example.com:99999"}, {"apiKey": "k"}, 10, "baseUrl"),
        ("brevo", {"baseUrl": "https://api.example.com/?x=1"}, {"apiKey": "k"}, 10, "baseUrl"),
    ],
)
def test_from_sender_names_the_bad_key(
    name: str, settings: dict[str, Any], credentials: dict[str, str], pool_size: int, field: str
) -> None:
    module = importlib.import_module(f"emailkit.providers.{name}")
    with pytest.raises(SenderConfigError) as info:
        module.from_sender(settings, credentials, pool_size=pool_size)
    assert info.value.field == field
    assert "pw" not in info.value.message


async def test_from_sender_defaults_to_the_providers_public_api() -> None:
    built = [
        mailgun_module.from_sender({"domain": "MG.Example.com."}, {"apiKey": "k"}, pool_size=3),
        postmark_module.from_sender({}, {"serverToken": "t"}, pool_size=3),
        resend_module.from_sender({}, {"apiKey": "k"}, pool_size=3),
        brevo_module.from_sender({"baseUrl": "https://api.brevo.com/"}, {"apiKey": "k"}, pool_size=3),
    ]
    try:
        assert [p.url for p in built] == [
            "https://api.mailgun.net/v3/mg.example.com/messages",
            "https://api.postmarkapp.com/email/batch",
            "https://api.resend.com/emails/batch",
            "https://api.brevo.com/v3/smtp/email",
        ]
        assert built[1].message_stream == "outbound"
    finally:
        for p in built:
            await p.close()
