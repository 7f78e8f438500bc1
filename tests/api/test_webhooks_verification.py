"""`POST /webhooks/{provider}`: verification on and off, and the providers' signed examples and forgeries.

Signed examples are posted with their published keys configured and the clock frozen at their signing
time (injected through `app.state.webhooks.clock`); the SNS certificate comes from EMAILKIT_SNS_CERT_DIR and
SNS subscription confirmations go to a fake AWS (an httpx transport) so nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Suppression
from emailkit.web import webhooks as webhooks_route
from tests.support.webhooks import MakeClient, fixture, nothing_stored, stored, webhook_clients

SNS_CERT = "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"


def signed(name: str) -> list[dict[str, Any]]:
    data = json.loads(fixture(f"{name}__signed_example.json"))
    return [data, *data["additional_cases"]]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def make_client(db: Database) -> AsyncIterator[MakeClient]:
    async with webhook_clients(db) as make:
        yield make


def freeze(app: Starlette, at: datetime | int) -> None:
    moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    app.state.webhooks.clock = lambda: moment


# --- verification on and off --------------------------------------------------------------------------------


async def test_a_provider_without_credentials_is_refused_while_verification_is_on(
    make_client: MakeClient, db: Database
) -> None:
    client, _ = await make_client()
    for provider, name in [("postmark", "postmark__bounce_hard.json"), ("sendgrid", "sendgrid__bounce.json")]:
        resp = await client.post(f"/webhooks/{provider}", content=fixture(name))
        assert resp.status_code == 401
        assert "no webhook credentials" in resp.json()["error"]
    assert await nothing_stored(db)


async def test_verification_off_logs_a_warning_at_start(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="emailkit.webhooks"):
        await make_client(webhook_verify=False)
    assert any("EMAILKIT_WEBHOOK_VERIFY=false" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emailkit.webhooks"):
        await make_client()
    assert not any("EMAILKIT_WEBHOOK_VERIFY" in r.getMessage() for r in caplog.records)


# --- signatures: the published examples --------------------------------------------------------------------


async def test_sendgrid_signed_example_and_forgeries(make_client: MakeClient, db: Database) -> None:
    cases = signed("sendgrid")
    good = cases[0]
    client, app = await make_client(sendgrid_webhook_public_key=good["key"]["public_key_base64_der_spki"])
    signed_at = int(good["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"])
    freeze(app, signed_at)
    for case in cases[1:]:
        if case["key"] != good["key"]:
            continue  # a case about another key is a configuration, not a request
        resp = await client.post("/webhooks/sendgrid", content=case["body"].encode(), headers=case["headers"])
        assert resp.status_code == 401, case["name"]
    assert await nothing_stored(db)

    freeze(app, signed_at + 301)
    stale = await client.post("/webhooks/sendgrid", content=good["body"].encode(), headers=good["headers"])
    assert stale.status_code == 401
    assert await nothing_stored(db)

    freeze(app, signed_at)
    resp = await client.post("/webhooks/sendgrid", content=good["body"].encode(), headers=good["headers"])
    assert resp.status_code == 200
    assert resp.json() == {"received": 1, "stored": 1, "duplicates": 0}
    (event,) = await stored(db)
    assert (event.type.value, event.email, event.provider) == ("DROPPED", "hello@world.com", "sendgrid")


async def test_mailgun_signed_examples(make_client: MakeClient, db: Database) -> None:
    stored_total = 0
    for case in signed("mailgun"):
        # A fresh app per case, configured with the case's key: the published cases share a token, which
        # replay protection would refuse the second time.
        client, app = await make_client(mailgun_webhook_signing_key=case["key"]["webhook_signing_key"])
        body = case["body"].encode()
        freeze(app, int(json.loads(body)["signature"]["timestamp"]))
        resp = await client.post("/webhooks/mailgun", content=body, headers=case["headers"])
        if not case["expected_valid"]:
            assert resp.status_code == 401, case["name"]
            continue
        assert resp.status_code == 200, (case["name"], resp.text)
        stored_total += resp.json()["stored"]
        replay = await client.post("/webhooks/mailgun", content=body, headers=case["headers"])
        assert replay.status_code == 401, case["name"]
    assert stored_total >= 7
    assert len(await stored(db)) == stored_total


async def test_a_mailgun_delivery_that_could_not_be_stored_is_accepted_on_retry(
    make_client: MakeClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = next(c for c in signed("mailgun") if c["expected_valid"])
    client, app = await make_client(mailgun_webhook_signing_key=case["key"]["webhook_signing_key"])
    body = case["body"].encode()
    freeze(app, int(json.loads(body)["signature"]["timestamp"]))
    real = webhooks_route.record_events
    calls = 0

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return await real(*args, **kwargs)

    monkeypatch.setattr(webhooks_route, "record_events", failing_once)
    # The app answers 500 (the test transport re-raises the error behind it) and stores nothing.
    with pytest.raises(ConnectionError):
        await client.post("/webhooks/mailgun", content=body, headers=case["headers"])
    assert await nothing_stored(db)
    # Mailgun retries with the same token: accepted this time, since nothing was stored before.
    resp = await client.post("/webhooks/mailgun", content=body, headers=case["headers"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["stored"] >= 1
    # Once stored, the same token is a replay again.
    replay = await client.post("/webhooks/mailgun", content=body, headers=case["headers"])
    assert replay.status_code == 401


async def test_resend_signed_examples(make_client: MakeClient, db: Database) -> None:
    for case in signed("resend"):
        client, app = await make_client(resend_webhook_secret=case["key"]["signing_secret"])
        freeze(app, int(case["headers"]["svix-timestamp"]))
        resp = await client.post("/webhooks/resend", content=case["body"].encode(), headers=case["headers"])
        assert resp.status_code == (200 if case["expected_valid"] else 401), case["name"]
    # Both valid vectors are `email.sent`, which is not an outcome we record.
    assert await nothing_stored(db)


@pytest.fixture
def sns_cert_dir(tmp_path: Path) -> Path:
    key = json.loads(fixture("ses__signed_example.json"))["key"]
    (tmp_path / SNS_CERT).write_text(key["cert_pem"])
    return tmp_path


async def test_ses_real_sns_signatures(make_client: MakeClient, db: Database, sns_cert_dir: Path) -> None:
    client, app = await make_client(sns_cert_dir=sns_cert_dir)
    requested: list[str] = []

    def aws(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")

    app.state.webhooks.http.transport = httpx.MockTransport(aws)
    for case in signed("ses"):
        headers = {k: v for k, v in case["headers"].items() if k.lower() != "content-length"}
        resp = await client.post("/webhooks/ses", content=case["body"].encode(), headers=headers)
        assert resp.status_code == (200 if case["expected_valid"] else 401), (case["name"], resp.text)
    # The certificate came from the directory: the only outgoing requests were the two confirmations.
    assert len(requested) == 2
    assert all(
        re.match(r"^https://sns\.[a-z0-9-]+\.amazonaws\.com/\?Action=ConfirmSubscription", u)
        for u in requested
    )
    emails = Counter(e.email for e in await stored(db))
    assert emails["bounce@simulator.amazonses.com"] == 1
    # The simulator's hard bounce suppressed the address at once.
    async with db.session() as s:
        assert (await s.execute(select(Suppression.email))).scalars().all() == [
            "bounce@simulator.amazonses.com"
        ]


async def test_sns_confirmation_failure_is_reported(make_client: MakeClient, sns_cert_dir: Path) -> None:
    client, app = await make_client(sns_cert_dir=sns_cert_dir)
    app.state.webhooks.http.transport = httpx.MockTransport(lambda r: httpx.Response(403))
    body = fixture("ses__sns_subscription_confirmation.json")
    resp = await client.post("/webhooks/ses", content=body)
    assert resp.status_code == 502


async def test_sns_confirmation_only_goes_to_aws(make_client: MakeClient) -> None:
    client, app = await make_client(webhook_verify=False)
    requested: list[str] = []
    app.state.webhooks.http.transport = httpx.MockTransport(
        lambda r: requested.append(str(r.url)) or httpx.Response(200)
    )
    envelope = json.loads(fixture("ses__sns_subscription_confirmation__awsdocs.json"))
    envelope["SubscribeURL"] = "https://attacker.example/?Action=ConfirmSubscription"
    resp = await client.post("/webhooks/ses", content=json.dumps(envelope).encode())
    assert resp.status_code == 401
    assert requested == []


async def test_basic_auth_providers(make_client: MakeClient, db: Database) -> None:
    client, _ = await make_client(
        postmark_webhook_username="pm",
        postmark_webhook_password="pm-secret",
        brevo_webhook_username="brevo",
        brevo_webhook_password="brevo-secret",
    )
    body = fixture("postmark__bounce_hard.json")
    for headers in ({}, basic("pm", "wrong"), basic("brevo", "brevo-secret")):
        assert (await client.post("/webhooks/postmark", content=body, headers=headers)).status_code == 401
    assert await nothing_stored(db)
    resp = await client.post("/webhooks/postmark", content=body, headers=basic("pm", "pm-secret"))
    assert resp.status_code == 200 and resp.json()["stored"] == 1
    resp = await client.post(
        "/webhooks/brevo", content=fixture("brevo__click.json"), headers=basic("brevo", "brevo-secret")
    )
    assert resp.status_code == 200 and resp.json()["stored"] == 1
