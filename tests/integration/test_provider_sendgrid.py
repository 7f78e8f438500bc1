"""The sendgrid provider against a local server that checks SendGrid's documented v3 mail/send request shape
and answers the way SendGrid does (202 + X-Message-Id, 400 error JSON, 401, 429 with rate-limit headers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from emailkit.domain.ports.provider import DELIVERY_TAG, Address, OutgoingMessage
from emailkit.providers.registry import build_provider
from emailkit.providers.sendgrid import SendGridProvider
from emailkit.settings import Settings
from tests.support.handover import HandoverLog
from tests.support.provider_apis.sendgrid import API_KEY, sendgrid_server


@asynccontextmanager
async def provider(url: str, **kwargs: Any) -> AsyncIterator[SendGridProvider]:
    p = SendGridProvider(api_key=kwargs.pop("api_key", API_KEY), base_url=url, **kwargs)
    try:
        yield p
    finally:
        await p.close()


def message(i: int, *, personal: bool = True, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"c9-s{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", f"User {i}"),
        "from_": Address("news@news.example.com", "Example News"),
        "reply_to": Address("replies@news.example.com"),
        "subject": f"Hello {i}",
        "html": f"<p>Hello user {i}</p>" if personal else "<p>Hello everyone</p>",
        "text": f"Hello user {i}" if personal else "Hello everyone",
        "headers": {
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "News <news.example.com>",
        },
        "tags": {"campaign": "9"},
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


async def test_personalised_messages_go_one_per_request_with_bounded_concurrency() -> None:
    async with sendgrid_server() as (url, state), provider(url, concurrency=3) as p:
        results = await p.send_batch([message(i) for i in range(12)])
    assert all(r.ok and r.provider_message_id for r in results), [r.error for r in results]
    assert len({r.provider_message_id for r in results}) == 12
    assert len(state.accepted) == 12
    assert 1 < state.max_in_flight <= 3
    body = next(
        b for b in state.accepted if b["personalizations"][0]["to"][0]["email"] == "user4@example.org"
    )
    assert body["from"] == {"email": "news@news.example.com", "name": "Example News"}
    assert body["reply_to"] == {"email": "replies@news.example.com"}
    assert body["content"] == [
        {"type": "text/plain", "value": "Hello user 4"},
        {"type": "text/html", "value": "<p>Hello user 4</p>"},
    ]
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "user4@example.org", "name": "User 4"}]
    assert personalization["subject"] == "Hello 4"
    assert personalization["custom_args"] == {"campaign": "9", DELIVERY_TAG: "c9-s4"}
    assert personalization["headers"] == {
        "List-Unsubscribe": "<https://mail.example.com/u/4>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "News <news.example.com>",
    }


async def test_identical_content_shares_requests_of_at_most_1000() -> None:
    messages = [message(i, personal=False) for i in range(1005)]
    async with sendgrid_server() as (url, state), provider(url) as p:
        results = await p.send_batch(messages)
    assert all(r.ok for r in results)
    assert sorted(len(b["personalizations"]) for b in state.accepted) == [5, 1000]
    delivered = [p["custom_args"][DELIVERY_TAG] for b in state.accepted for p in b["personalizations"]]
    assert sorted(delivered) == sorted(m.delivery_id for m in messages)
    # One request, one X-Message-Id for all its personalizations.
    assert len({r.provider_message_id for r in results}) == 2


async def test_rate_limit_is_transient_with_retry_after_from_reset_header() -> None:
    async with sendgrid_server() as (url, _), provider(url) as p:
        results = await p.send_batch([message(1), message(2, to=Address("limited@example.org"))])
    assert results[0].ok
    limited = results[1]
    assert not limited.ok and limited.transient
    assert limited.retry_after is not None and 25 <= limited.retry_after <= 30
    assert limited.error == "SendGrid 429: too many requests"


async def test_bad_address_in_a_shared_request_fails_only_that_recipient() -> None:
    messages = [message(i, personal=False) for i in range(4)]
    messages[2] = message(2, personal=False, to=Address("not-an-address"))
    async with sendgrid_server() as (url, state), provider(url) as p:
        results = await p.send_batch(messages)
    assert [r.ok for r in results] == [True, True, False, True]
    bad = results[2]
    assert not bad.transient
    assert bad.error == "SendGrid 400: Does not contain a valid address. (personalizations.0.to.0.email)"
    assert sorted(p["to"][0]["email"] for b in state.accepted for p in b["personalizations"]) == [
        "user0@example.org",
        "user1@example.org",
        "user3@example.org",
    ]


async def test_server_errors_and_bad_keys_are_transient() -> None:
    async with sendgrid_server() as (url, _):
        async with provider(url) as p:
            (broken,) = await p.send_batch([message(1, to=Address("broken@example.org"))])
        async with provider(url, api_key="SG.wrong") as p:
            unauthorized = await p.send_batch([message(2), message(3)])
    assert not broken.ok and broken.transient and broken.error == "SendGrid 500: Internal server error"
    for result in unauthorized:
        assert not result.ok and result.transient
        assert (
            result.error == "SendGrid 401: The provided authorization grant is invalid, expired, or revoked"
        )


async def test_unreachable_api_is_transient() -> None:
    async with sendgrid_server() as (url, _):
        pass
    async with provider(url) as p:
        results = await p.send_batch([message(1), message(2)])
    assert all(not r.ok and r.transient and "SendGrid request failed" in (r.error or "") for r in results)


async def test_categories_and_settings_switch() -> None:
    async with sendgrid_server() as (url, state):
        async with provider(url, categories=["newsletter"]) as p:
            assert (await p.send_batch([message(1)]))[0].ok
        built = build_provider(Settings(provider="sendgrid", sendgrid_api_key=API_KEY, sendgrid_base_url=url))
        try:
            assert (await built.send_batch([message(2)]))[0].ok
        finally:
            await built.close()
    assert state.accepted[0]["categories"] == ["newsletter"]
    assert "categories" not in state.accepted[1]


async def test_commit_hook_runs_before_any_request() -> None:
    seen: list[tuple[list[str], int]] = []
    async with sendgrid_server() as (url, state), provider(url) as p:

        async def on_commit(ids: Sequence[str]) -> None:
            seen.append((list(ids), len(state.accepted)))

        results = await p.send_batch([message(1), message(2)], on_commit=on_commit)

        async def refuse(ids: Sequence[str]) -> None:
            raise RuntimeError("ledger unavailable")

        with pytest.raises(RuntimeError, match="ledger unavailable"):
            await p.send_batch([message(3)], on_commit=refuse)
    assert all(r.ok for r in results)
    assert seen == [(["c9-s1", "c9-s2"], 0)]
    assert len(state.accepted) == 2


async def test_each_request_commits_only_its_own_recipients_and_reports_before_its_slot_is_reused() -> None:
    log = HandoverLog()
    messages = [message(i) for i in range(30)]
    # Plus a shared request of 7 identical messages: one commit for exactly its recipients.
    messages += [message(100 + i, personal=False) for i in range(7)]
    async with sendgrid_server() as (url, state), provider(url, concurrency=4) as p:
        state.handover = log
        results = await p.send_batch(messages, on_commit=log.on_commit, on_result=log.on_result)
    assert all(r.ok for r in results)
    worst = log.check(all_ids={m.delivery_id for m in messages}, most_in_doubt=3 + 7)
    assert worst >= 2  # requests did overlap
    requests = [ids for kind, ids in log.events if kind == "request"]
    assert len(requests) == 31 and {len(ids) for ids in requests} == {1, 7}
    # Never the whole batch ahead: when the first request went out, at most one request per slot was committed.
    first = next(i for i, (kind, _) in enumerate(log.events) if kind == "request")
    assert sum(len(ids) for kind, ids in log.events[:first] if kind == "commit") <= 3 + 7


async def test_a_refused_commit_stops_the_requests_not_yet_sent() -> None:
    committed: list[str] = []

    async def on_commit(ids: Sequence[str]) -> None:
        if len(committed) >= 3:
            raise RuntimeError("lease lost")
        committed.extend(ids)

    async with sendgrid_server() as (url, state), provider(url, concurrency=1) as p:
        with pytest.raises(RuntimeError, match="lease lost"):
            await p.send_batch([message(i) for i in range(10)], on_commit=on_commit)
    sent = [p["custom_args"][DELIVERY_TAG] for b in state.accepted for p in b["personalizations"]]
    assert sent == committed == ["c9-s0", "c9-s1", "c9-s2"]
