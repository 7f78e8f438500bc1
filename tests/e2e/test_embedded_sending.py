"""The embedded default end to end: GraphQL → in-process queue → outbox, with live progress over WebSocket.

Sync tests on purpose: starlette's TestClient runs the app's lifespan (which starts the in-process worker) and
speaks WebSocket; the database is a SQLite file of the test's own.
"""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailkit.schema.relay import to_global_id
from tests.e2e.embedded import Api, embedded_app

BODY = (
    "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ subscriber.name }}! "
    '<a href="https://example.com/a">A</a></mj-text></mj-column></mj-section></mj-body></mjml>'
)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Api, Path]]:
    with embedded_app(tmp_path, public_url="https://mail.example.com", batch_size=10) as api:
        yield api, api.outbox


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def setup_campaign(api: Api, n: int) -> str:
    list_id = api('mutation { createList(input: {name: "News"}) { list { id } } }')["createList"]["list"][
        "id"
    ]
    for i in range(n):
        out = api(
            "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
            {"i": {"email": f"p{i}@example.com", "name": f"P{i}", "listIds": [list_id]}},
        )
        assert out["createSubscriber"]["userErrors"] == []
    created = api(
        "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } userErrors { code } } }",
        {
            "i": {
                "name": "Hello",
                "subject": "Hello {{ subscriber.name }}",
                "fromEmail": "news@example.com",
                "listIds": [list_id],
                "body": BODY,
                "format": "MJML",
            }
        },
    )["createCampaign"]
    assert created["userErrors"] == []
    campaign_id: str = created["campaign"]["id"]
    return campaign_id


STATUS = "query($id: ID!) { campaign(id: $id) { status progress { recipients sent failed skipped } } }"


def test_campaign_sends_to_the_outbox_and_progress_streams_to_the_end(embedded: tuple[Api, Path]) -> None:
    api, outbox = embedded
    campaign_id = setup_campaign(api, 25)
    with api.client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {api.key}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": "subscription($id: ID!) { campaignProgress(id: $id) "
                    "{ status recipients sent failed skipped ratePerSecond etaSeconds } }",
                    "variables": {"id": campaign_id},
                },
            }
        )
        first = ws.receive_json()
        assert first["payload"]["data"]["campaignProgress"]["status"] == "DRAFT"
        assert first["payload"]["data"]["campaignProgress"]["etaSeconds"] is None

        started = api(
            "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { campaign { status } userErrors { code } } }",
            {"i": {"id": campaign_id}},
        )["startCampaign"]
        assert started == {"campaign": {"status": "RUNNING"}, "userErrors": []}

        updates = []
        while True:
            message = ws.receive_json()
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            updates.append(message["payload"]["data"]["campaignProgress"])
    assert updates[-1]["status"] == "FINISHED"
    assert updates[-1]["etaSeconds"] is None  # not running: no time to completion, rather than 0
    assert updates[-1]["sent"] == 25 and updates[-1]["recipients"] == 25
    sent_counts = [u["sent"] for u in updates]
    assert sent_counts == sorted(sent_counts)  # progress never goes backwards

    emls = sorted(outbox.glob("*.eml"))
    assert len(emls) == 25
    msg = email.message_from_bytes(emls[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"].startswith("Hello P")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    final = api(STATUS, {"id": campaign_id})["campaign"]
    assert final == {
        "status": "FINISHED",
        "progress": {"recipients": 25, "sent": 25, "failed": 0, "skipped": 0},
    }


def test_illegal_transitions_are_user_errors(embedded: tuple[Api, Path]) -> None:
    api, _ = embedded
    campaign_id = setup_campaign(api, 1)
    for mutation in ("pauseCampaign", "resumeCampaign"):
        out = api(
            f"mutation($i: CampaignIdInput!) {{ {mutation}(input: $i) {{ campaign {{ id }} userErrors {{ field code message }} }} }}",
            {"i": {"id": campaign_id}},
        )[mutation]
        assert out["campaign"] is None
        assert out["userErrors"][0]["code"] == "INVALID_STATE"
        assert "DRAFT" in out["userErrors"][0]["message"]
    cancelled = api(
        "mutation($i: CampaignIdInput!) { cancelCampaign(input: $i) { campaign { status statusReason } } }",
        {"i": {"id": campaign_id}},
    )["cancelCampaign"]["campaign"]
    assert cancelled["status"] == "CANCELLED"
    again = api(
        "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { userErrors { code } } }",
        {"i": {"id": campaign_id}},
    )["startCampaign"]
    assert again["userErrors"] == [{"code": "INVALID_STATE"}]


def test_scheduled_campaign_starts_by_itself(embedded: tuple[Api, Path]) -> None:
    api, outbox = embedded
    campaign_id = setup_campaign(api, 3)
    send_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    out = api(
        "mutation($i: ScheduleCampaignInput!) { scheduleCampaign(input: $i) { campaign { status sendAt } userErrors { code } } }",
        {"i": {"id": campaign_id, "sendAt": send_at}},
    )["scheduleCampaign"]
    assert out["campaign"]["status"] == "SCHEDULED" and out["userErrors"] == []
    wait_until(lambda: api(STATUS, {"id": campaign_id})["campaign"]["status"] == "FINISHED")
    assert len(list(outbox.glob("*.eml"))) == 3
    past = api(
        "mutation($i: ScheduleCampaignInput!) { scheduleCampaign(input: $i) { userErrors { field code } } }",
        {"i": {"id": setup_campaign(api, 0), "sendAt": "2001-01-01T00:00:00Z"}},
    )["scheduleCampaign"]
    assert past["userErrors"] == [{"field": "sendAt", "code": "INVALID_INPUT"}]


def test_send_test_email_and_transactional(embedded: tuple[Api, Path]) -> None:
    api, outbox = embedded
    campaign_id = setup_campaign(api, 1)
    out = api(
        "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { results { email ok error } userErrors { code } } }",
        {"i": {"campaignId": campaign_id, "emails": ["Boss@Example.com"]}},
    )["sendTestEmail"]
    assert out == {"results": [{"email": "boss@example.com", "ok": True, "error": None}], "userErrors": []}
    [eml] = list(outbox.glob("test-*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    # Nobody has that address: a sample subscriber fills the personalisation rather than nothing.
    assert msg["Subject"] == "[Test] Hello Sam Sample"
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "https://example.com/a" in html and "Hi Sam Sample!" in html
    # Nothing about a test send touches the campaign.
    assert api(STATUS, {"id": campaign_id})["campaign"]["status"] == "DRAFT"
    eml.unlink()

    # A subscriber's own address gets their data; subscriberId picks whose data every address gets.
    subscriber_id = api("{ subscribers(first: 1) { edges { node { id } } } }")["subscribers"]["edges"][0][
        "node"
    ]["id"]
    for i, extra in (
        (0, {"emails": ["p0@example.com"]}),
        (1, {"emails": ["boss@example.com"], "subscriberId": subscriber_id}),
    ):
        out = api(
            "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { results { ok } userErrors { code } } }",
            {"i": {"campaignId": campaign_id, **extra}},
        )["sendTestEmail"]
        assert out == {"results": [{"ok": True}], "userErrors": []}, i
        [eml] = list(outbox.glob("test-*.eml"))
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert msg["Subject"] == "[Test] Hello P0" and msg["To"].addresses[0].addr_spec == extra["emails"][0]
        eml.unlink()
    unknown = api(
        "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { results { ok } userErrors { field code } } }",
        {
            "i": {
                "campaignId": campaign_id,
                "emails": ["boss@example.com"],
                "subscriberId": to_global_id("Subscriber", 9999),
            }
        },
    )["sendTestEmail"]
    assert unknown == {
        "results": [],
        "userErrors": [{"field": "subscriberId", "code": "SUBSCRIBER_NOT_FOUND"}],
    }

    bad = api(
        "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { userErrors { field code } } }",
        {"i": {"campaignId": campaign_id, "emails": ["nope"]}},
    )["sendTestEmail"]
    assert bad["userErrors"] == [{"field": "emails", "code": "INVALID_EMAIL"}]

    template = api(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } userErrors { code } } }",
        {
            "i": {
                "name": "Receipt",
                "kind": "TRANSACTIONAL",
                "format": "HTML",
                "subject": "Order {{ order_id }}",
                "body": "<p>Thanks for order {{ order_id }}, {{ subscriber.email }}</p>",
            }
        },
    )["createTemplate"]["template"]
    sent = api(
        "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { id status } userErrors { field code } } }",
        {"i": {"templateId": template["id"], "to": "buyer@example.com", "data": {"order_id": 42}}},
    )["sendTransactional"]
    assert sent["userErrors"] == [] and sent["delivery"]["status"] == "QUEUED"
    delivery_id = sent["delivery"]["id"]
    query = "query($id: ID!) { delivery(id: $id) { status email providerMessageId attempts } }"
    wait_until(lambda: api(query, {"id": delivery_id})["delivery"]["status"] == "SENT")
    receipt = [p for p in outbox.glob("*.eml") if not p.name.startswith("test-")]
    assert len(receipt) == 1
    msg = email.message_from_bytes(receipt[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Order 42" and msg["From"] == "hello@example.com"

    refused = api(
        "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { id } userErrors { field code } } }",
        {"i": {"templateId": template["id"], "to": "x@example.com", "data": {"subscriber": 1}}},
    )["sendTransactional"]
    assert refused == {"delivery": None, "userErrors": [{"field": "data", "code": "INVALID_INPUT"}]}


def test_transactional_mail_is_never_sent_to_a_suppressed_address(embedded: tuple[Api, Path]) -> None:
    api, outbox = embedded
    added = api('mutation { addSuppression(input: {email: "gone@example.com"}) { userErrors { code } } }')[
        "addSuppression"
    ]
    assert added["userErrors"] == []
    template = api(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } } }",
        {"i": {"name": "T", "kind": "TRANSACTIONAL", "format": "HTML", "subject": "Hi", "body": "<p>Hi</p>"}},
    )["createTemplate"]["template"]["id"]
    refused = api(
        "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { id } userErrors { field code } } }",
        {"i": {"templateId": template, "to": "Gone@Example.com"}},
    )["sendTransactional"]
    assert refused == {"delivery": None, "userErrors": [{"field": "to", "code": "SUPPRESSED"}]}
    assert list(outbox.glob("*.eml")) == []
