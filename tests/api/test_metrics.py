"""``GET /metrics`` on the API: who may read it, and that it counts a campaign sent through a real worker
(the in-process one, on the database under test), with every label value from a bounded set."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from emailkit.app import build_runtime, create_app
from emailkit.db.engine import Database
from emailkit.db.tables.sending import CampaignStatus
from emailkit.domain.errors import ErrorCode
from emailkit.metrics import families as bounds
from emailkit.schema.operation_metrics import ERROR_CODES
from emailkit.schema.relay import to_global_id
from emailkit.settings import Settings
from emailkit.tasks.broker.factory import configure_broker
from emailkit.tasks.broker.queue import DramatiqJobQueue
from emailkit.tasks.pubsub import InProcessPubSub
from emailkit.tasks.worker import EmbeddedWorker, runtime_scope
from tests.support.audience import seed_campaign
from tests.support.graphql import GQL, data, graphql_runner
from tests.support.metrics import samples, total

TOKEN = "metrics-token-0123456789abcdef"
START = """
mutation($id: ID!) { startCampaign(input: {id: $id}) { campaign { status } userErrors { code } } }
"""
STATUS = "query($id: ID!) { campaign(id: $id) { status } }"


def _client(app: object, client_host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_without_a_token_only_loopback_clients_may_read(settings: Settings) -> None:
    app = create_app(settings)
    async with _client(app) as local:
        resp = await local.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        assert "# TYPE emailkit_emails_total counter" in resp.text
    async with _client(app, "203.0.113.7") as remote:
        refused = await remote.get("/metrics")
        assert refused.status_code == 403
        assert "EMAILKIT_METRICS_TOKEN" in refused.text
        assert "emailkit_" not in refused.text


async def test_a_token_is_required_from_everybody_once_set(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}))
    for host in ("127.0.0.1", "203.0.113.7"):
        async with _client(app, host) as client:
            missing = await client.get("/metrics")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
            assert wrong.status_code == 401
            basic = await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401
            ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            assert "emailkit_emails" in ok.text


def test_a_short_token_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(metrics_token="short")  # type: ignore[arg-type]


@pytest.fixture
async def sending_app(db: Database, settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a real job queue and the in-process worker sending to the outbox."""
    settings = settings.model_copy(update={"outbox_dir": tmp_path / "outbox", "batch_size": 7})
    broker = configure_broker(None)
    pubsub = InProcessPubSub()
    jobs = DramatiqJobQueue(broker)
    runtime = build_runtime(settings, db, jobs=jobs, pubsub=pubsub)
    worker = EmbeddedWorker(
        broker, runtime_scope(build_runtime, settings, jobs=jobs, pubsub=pubsub), threads=2, poll_ms=50
    )
    worker.start()
    try:
        async with _client(create_app(settings, runtime)) as client:
            yield client
    finally:
        await worker.stop()
        if runtime.sending is not None:
            await runtime.sending.close()
        await pubsub.close()


async def _finished(gql: GQL, campaign_id: str, within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if data(await gql(STATUS, {"id": campaign_id}))["campaign"]["status"] == "FINISHED":
                return
            await asyncio.sleep(0.05)


async def test_a_campaign_sent_by_the_worker_is_counted(
    sending_app: httpx.AsyncClient, admin_key: str, db: Database
) -> None:
    gql = graphql_runner(sending_app, admin_key)
    before = (await sending_app.get("/metrics")).text
    recipients = 23
    campaign_id, _ = await seed_campaign(db, recipients)
    global_id = to_global_id("Campaign", campaign_id)
    started = data(await gql(START, {"id": global_id}))["startCampaign"]
    assert started["userErrors"] == []
    await _finished(gql, global_id)
    # A mutation refused with a userError, and a query that does not validate: both counted by code.
    again = data(await gql(START, {"id": global_id}))["startCampaign"]
    assert [e["code"] for e in again["userErrors"]] == ["INVALID_STATE"]
    assert (await gql("{ nope }"))["errors"]
    after = (await sending_app.get("/metrics")).text

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    sent = delta("emailkit_emails_total", kind="campaign", sender="outbox", status="sent")
    assert sent == recipients
    assert delta("emailkit_emails_total", status="failed") == 0
    # 23 recipients in batches of 7: four batches, each claimed once and done.
    assert delta("emailkit_batches_total", event="claimed") == 4
    assert delta("emailkit_batches_total", event="done") == 4
    assert delta("emailkit_campaign_runs_total", status="running") == 1
    finished = delta("emailkit_campaign_runs_total", status="finished")
    if db.dialect == "postgresql":
        assert finished == 1
    else:
        # SQLite takes no row lock on the campaign read that finishes it: once in a while the last two batches
        # both see it complete and both mark it FINISHED (seen once in about ten runs; PostgreSQL's
        # SELECT ... FOR UPDATE makes the second one wait and see FINISHED).
        assert finished in (1, 2)
    assert delta("emailkit_send_duration_seconds_count", sender="outbox") >= 1
    assert delta("emailkit_graphql_duration_seconds_count", operation_type="mutation") == 2
    assert delta("emailkit_graphql_duration_seconds_count", operation_type="query") >= 1
    assert delta("emailkit_graphql_errors_total", kind="user_error", code="INVALID_STATE") == 1
    assert delta("emailkit_graphql_errors_total", kind="error", code="GRAPHQL_INVALID") == 1
    assert delta("emailkit_http_request_duration_seconds_count", route="/graphql", method="POST") >= 4
    # The pool gauges are back to what they were: every checkout was checked in.
    assert total(after, "emailkit_db_pool_connections", state="waiting") == 0
    assert_bounded(after, [str(r.path) for r in sending_app._transport.app.routes])  # type: ignore[attr-defined]


# Each label's closed set (routes and queues are checked apart: the code names them); `kind` means something
# else in each family that has it. Families another test of the same process fed show up here too.
KINDS: dict[str, frozenset[str]] = {
    "emailkit_emails": bounds.EMAIL_KINDS,
    "emailkit_graphql_errors": bounds.GRAPHQL_ERROR_KINDS,
    "emailkit_tracking_hits": bounds.TRACKING_KINDS,
}
BOUNDS: dict[str, frozenset[str]] = {
    "sender": bounds.SENDERS,
    "status": bounds.EMAIL_STATUSES | bounds.CAMPAIGN_STATUSES | bounds.FLOW_RUN_STATUSES,
    "event": bounds.BATCH_EVENTS,
    "provider": bounds.WEBHOOK_PROVIDERS,
    "type": bounds.WEBHOOK_EVENT_TYPES,
    "outcome": bounds.IMPORT_OUTCOMES,
    "operation_type": bounds.GRAPHQL_OPERATION_TYPES,
    "method": bounds.HTTP_METHODS,
    "state": bounds.POOL_STATES,
    "code": ERROR_CODES,
}
_EMAIL_LIKE = re.compile(r"@|^\d+$")


def assert_bounded(text: str, routes: list[str]) -> None:
    """Every label value of every emailkit family is from its closed set: no address, no id, no path."""
    seen = 0
    for s in samples(text):
        if not s.family.startswith("emailkit_"):
            continue
        for label, value in s.labels.items():
            if label == "le":
                continue
            seen += 1
            assert not _EMAIL_LIKE.search(value) or (
                label == "code" and s.family == "emailkit_http_errors"
            ), (
                s.name,
                label,
                value,
            )
            if label == "route":
                assert value in routes or value == "unmatched", value
            elif label == "code" and s.family == "emailkit_http_errors":
                assert 400 <= int(value) < 600
            elif label == "queue":
                assert re.fullmatch(r"[a-z0-9_]+(\.DQ)?", value), value
            elif label == "kind":
                assert value in KINDS[s.family] | {bounds.OTHER}, (s.name, label, value)
            else:
                assert value in BOUNDS[label] | {bounds.OTHER}, (s.name, label, value)
    assert seen > 0


def test_the_bounded_sets_cover_the_domain_s_values() -> None:
    assert {s.value.lower() for s in CampaignStatus} - {"draft"} <= bounds.CAMPAIGN_STATUSES
    assert {c.value for c in ErrorCode} <= ERROR_CODES
