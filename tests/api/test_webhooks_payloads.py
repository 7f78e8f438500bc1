"""`POST /webhooks/{provider}` with the providers' real payloads: what the route answers to bodies it cannot
use, and the events every payload yields after a campaign.

Payloads are posted with verification off (signatures are test_webhooks_verification's subject); SNS
subscription confirmations go to a fake AWS (an httpx transport) so nothing leaves the machine.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.audience import SubscriberStatus
from emailkit.db.tables.feedback import Event
from tests.support.feedback import seed_sent_campaign, stats, subscriber
from tests.support.webhooks import FIXTURES, MakeClient, fixture, nothing_stored, stored, webhook_clients


@pytest.fixture
async def make_client(db: Database) -> AsyncIterator[MakeClient]:
    async with webhook_clients(db) as make:
        yield make


# --- the route's answers ------------------------------------------------------------------------------------


async def test_unknown_provider_is_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    resp = await client.post("/webhooks/nope", content=b"[]")
    assert resp.status_code == 404
    assert (await client.get("/webhooks/sendgrid")).status_code == 405


async def test_body_over_the_limit_is_413(make_client: MakeClient, db: Database) -> None:
    client, app = await make_client(webhook_verify=False)
    app.state.webhooks.max_body_bytes = 1000
    big = json.dumps([{"email": f"u{i}@x.test", "event": "delivered"} for i in range(100)]).encode()
    assert (await client.post("/webhooks/sendgrid", content=big)).status_code == 413

    async def streamed() -> AsyncIterator[bytes]:
        # No Content-Length: the limit holds while reading.
        for i in range(0, len(big), 100):
            yield big[i : i + 100]

    assert (await client.post("/webhooks/sendgrid", content=streamed())).status_code == 413
    assert await nothing_stored(db)


async def test_the_default_limit_is_two_mebibytes(make_client: MakeClient, db: Database) -> None:
    # Over twice SendGrid's largest batch (768 KB); see emailkit.web.bodylimit.WEBHOOK_BYTES.
    client, _ = await make_client(webhook_verify=False)
    resp = await client.post("/webhooks/sendgrid", content=b"[" + b" " * (2 * 1024 * 1024 - 1) + b"]")
    assert resp.status_code == 413
    assert resp.json()["limitBytes"] == 2 * 1024 * 1024
    ok = await client.post("/webhooks/sendgrid", content=b"[" + b" " * (2 * 1024 * 1024 - 2) + b"]")
    assert ok.status_code == 200


async def test_malformed_bodies_are_400_and_store_nothing(make_client: MakeClient, db: Database) -> None:
    client, _ = await make_client(webhook_verify=False)
    for provider, body in [
        ("sendgrid", b"{not json"),
        ("sendgrid", b'"a string"'),
        ("mailgun", b"[1, 2]"),
        ("ses", b'{"hello": "world"}'),
        ("postmark", b"\xff\xfe"),
    ]:
        resp = await client.post(f"/webhooks/{provider}", content=body)
        assert resp.status_code == 400, (provider, body, resp.text)
    assert await nothing_stored(db)


async def test_unknown_event_types_are_accepted_without_an_event(
    make_client: MakeClient, db: Database
) -> None:
    client, _ = await make_client(webhook_verify=False)
    for provider, name in [
        ("sendgrid", "sendgrid__processed.json"),
        ("sendgrid", "sendgrid__group_resubscribe.json"),
        ("mailgun", "mailgun__accepted.json"),
        ("brevo", "brevo__request.json"),
        ("resend", "resend__sent.json"),
        ("ses", "ses__message__send__event_awsdocs.json"),
        ("ses", "ses__sns_unsubscribe_confirmation__awsdocs.json"),
    ]:
        resp = await client.post(f"/webhooks/{provider}", content=fixture(name))
        assert resp.status_code == 200, (name, resp.text)
        assert resp.json()["stored"] == 0
    assert await nothing_stored(db)


# --- every fixture, after a campaign ---------------------------------------------------------------------


def triple(e: Event) -> tuple[str, str | None, str | None]:
    return (e.type.value, e.bounce_type.value if e.bounce_type else None, e.email)


def expected_index() -> dict[str, list[tuple[str, str | None, str]]]:
    """EXPECTED.md's index: fixture -> [(type, bounce class, recipient)] (ignored and control entries: [])."""
    out: dict[str, list[tuple[str, str | None, str]]] = {}
    for line in (FIXTURES / "EXPECTED.md").read_text().splitlines():
        m = re.match(r"^\| `([^`]+\.json)` \| ([^|]+) \| (.+) \|$", line)
        if m is None or "signature vectors" in m.group(2):
            continue
        items = []
        for part in m.group(3).split(";"):
            part = part.strip()
            if part.startswith("(") or not part:
                continue
            kind, email = part.split(" ")
            type_, _, bounce = kind.partition("/")
            items.append((type_.upper(), bounce.upper() or None, email))
        out[m.group(1)] = items
    return out


async def test_every_fixture_yields_its_expected_events(make_client: MakeClient, db: Database) -> None:
    index = expected_index()
    assert len(index) > 60
    recipients = sorted({email for items in index.values() for _, _, email in items})
    seeded = await seed_sent_campaign(db, recipients)
    client, app = await make_client(webhook_verify=False)
    app.state.webhooks.http.transport = httpx.MockTransport(lambda r: httpx.Response(200))
    seen: list[Event] = []
    for name, expected in sorted(index.items()):
        provider = name.split("__")[0]
        resp = await client.post(f"/webhooks/{provider}", content=fixture(name))
        assert resp.status_code == 200, (name, resp.text)
        body = resp.json()
        assert body.get("received", 0) == len(expected), name
        new = [e for e in await stored(db) if e.id > max((x.id for x in seen), default=0)]
        got = Counter(triple(e) for e in new)
        assert not got - Counter(expected), (name, got, expected)
        # What was not stored was a duplicate: the samples reuse placeholder event ids, so an earlier sample
        # of the same provider, type and recipient carried the same id (its bounce class may differ).
        for type_, _, email in (Counter(expected) - got).elements():
            assert any((e.provider, e.type.value, e.email) == (provider, type_, email) for e in seen), name
        assert body.get("duplicates", 0) == len(expected) - len(new), name
        seen += new
    events = await stored(db)
    assert len(events) == len(seen) > 0.9 * sum(len(items) for items in index.values())
    # Every recipient is a subscriber who received the campaign: each event is tied to both.
    assert all(e.campaign_id == seeded.campaign_id for e in events)
    assert all(e.subscriber_id == seeded.subscribers[e.email] for e in events if e.email)
    counters = await stats(db, seeded.campaign_id)
    assert counters["delivered"] == sum(1 for e in events if e.type.value == "DELIVERED")
    assert counters["complained"] == len({e.email for e in events if e.type.value == "COMPLAINT"})
    assert counters["opens"] == sum(1 for e in events if e.type.value == "OPEN")
    assert (await subscriber(db, "jane@example.com")).status is SubscriberStatus.BLOCKLISTED


async def test_retries_are_deduplicated(make_client: MakeClient, db: Database) -> None:
    seeded = await seed_sent_campaign(db, ["example@test.com"])
    client, _ = await make_client(webhook_verify=False)
    body = fixture("sendgrid__click.json")
    first = (await client.post("/webhooks/sendgrid", content=body)).json()
    counters = await stats(db, seeded.campaign_id)
    again = (await client.post("/webhooks/sendgrid", content=body)).json()
    assert first == {"received": 1, "stored": 1, "duplicates": 0}
    assert again == {"received": 1, "stored": 0, "duplicates": 1}
    assert await stats(db, seeded.campaign_id) == counters == {"clicks": 1, "unique_clicks": 1}


async def test_a_hard_bounce_blocklists_at_once(make_client: MakeClient, db: Database) -> None:
    await seed_sent_campaign(db, ["example@test.com"])
    client, _ = await make_client(webhook_verify=False)
    resp = await client.post("/webhooks/sendgrid", content=fixture("sendgrid__bounce.json"))
    assert resp.status_code == 200
    assert (await subscriber(db, "example@test.com")).status is SubscriberStatus.BLOCKLISTED
