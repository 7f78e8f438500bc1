"""Outgoing webhooks end to end, on both databases: emitted in the transaction of the change, dispatched by the
ticker, delivered by the job to a real local receiver, retried, kept in order per key, disabled, redelivered,
and kept inside their workspace. Time moves by an injected clock: nothing here sleeps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign, CampaignList
from emailkit.db.tables.webhooks_out import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookMessage,
    WebhookMessageStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, NotFound
from emailkit.domain.ports.queue import JobArg
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import lifecycle
from emailkit.domain.webhooks_out import destinations, dispatch, emit, endpoints
from emailkit.domain.webhooks_out.delivery import Deliverer, DeliveryConfig, WebhookSetup
from emailkit.domain.webhooks_out.events import EVENT_TYPES
from emailkit.providers.webhook_client import GuardedHttpClient
from emailkit.tasks.webhooks import deliver_webhooks
from tests.support.database import recorded_statements
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_workspace
from tests.support.import_job import start as start_import
from tests.support.webhook_receiver import Received, Receiver, always, receiver


@dataclass
class Clock:
    """The deliverer's time, moved by hand; it starts a little ahead of the real time messages are emitted at."""

    now: datetime = field(default_factory=lambda: utcnow().replace(microsecond=0) + timedelta(seconds=5))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class RecordingQueue:
    jobs: list[tuple[str, dict[str, JobArg]]] = field(default_factory=list)

    async def enqueue(
        self, job: str, args: Mapping[str, JobArg] | None = None, *, delay: float | None = None
    ) -> None:
        self.jobs.append((job, dict(args or {})))


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    emit.subscriptions.invalidate()


@pytest.fixture
async def client() -> AsyncIterator[GuardedHttpClient]:
    http = GuardedHttpClient(allow_private=True)
    yield http
    await http.aclose()


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    async with receiver() as box:
        yield box


async def make_endpoint(
    db: Database, url: str, events: list[str], *, allow_private: bool = True
) -> tuple[int, str]:
    async with db.transaction() as s:
        row, secret = await endpoints.create_endpoint(
            s, url, events, "test", instance_secret=TEST_SECRET, allow_private=allow_private
        )
        endpoint_id = row.id
    emit.subscriptions.invalidate()
    return endpoint_id, secret


async def emit_one(db: Database, type_name: str = "open", key: str | None = None, **data: Any) -> None:
    async with db.transaction() as s:
        await emit.emit(s, type_name, data or {"n": 1}, workspace_id=1, ordering_key=key)


def deliverer(db: Database, http: GuardedHttpClient, clock: Clock, **config: Any) -> Deliverer:
    return Deliverer(db, http, TEST_SECRET, DeliveryConfig(allow_private=True, **config), clock=clock)


async def messages(db: Database) -> list[WebhookMessage]:
    async with db.session() as s:
        return list((await s.execute(select(WebhookMessage).order_by(WebhookMessage.id))).scalars())


async def endpoint_row(db: Database, endpoint_id: int) -> WebhookEndpoint:
    async with db.session() as s:
        row = await s.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row


async def make_campaign(db: Database, subscribers: int = 3) -> int:
    async with db.transaction() as s:
        lst = MailingList(name="L")
        s.add(lst)
        await s.flush()
        for i in range(subscribers):
            sub = Subscriber(email=f"s{i}@example.com")
            s.add(sub)
            await s.flush()
            s.add(Subscription(subscriber_id=sub.id, list_id=lst.id))
        campaign = Campaign(
            name="Spring", subject="S", from_email="a@example.com", body="<p>x</p>", format=ContentFormat.HTML
        )
        s.add(campaign)
        await s.flush()
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id


def body_of(request: Received) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(request.body)
    return parsed


async def test_a_campaign_start_reaches_the_receiver_through_ticker_and_job_with_the_documented_envelope(
    db: Database, hooks: Receiver
) -> None:
    endpoint_id, secret = await make_endpoint(db, hooks.url, ["campaign.started", "campaign.finished"])
    campaign_id = await make_campaign(db)
    async with db.transaction() as s:
        await lifecycle.start_campaign(s, campaign_id)

    queue = RecordingQueue()
    runtime = Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url="http://testserver",
        jobs=queue,
        webhooks=WebhookSetup(DeliveryConfig(allow_private=True)),
    )
    upkeep = dispatch.WebhookUpkeep()
    await upkeep.tick(runtime)
    assert queue.jobs == [(dispatch.DELIVER_JOB, {"endpoint_id": endpoint_id})]
    await upkeep.tick(runtime)
    assert len(queue.jobs) == 1, "an enqueued endpoint is not enqueued again every second"
    try:
        await deliver_webhooks(runtime, endpoint_id=endpoint_id)
    finally:
        await runtime.webhooks.aclose()

    (request,) = await hooks.wait_for(1)
    Webhook(secret).verify(request.body, request.headers)
    assert request.path == "/hooks"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("emailkit-webhooks/")
    event = body_of(request)
    assert list(event) == ["id", "type", "version", "occurredAt", "workspaceId", "data"]
    assert event["id"] == request.headers["webhook-id"] and event["id"].startswith("evt_")
    assert (event["type"], event["version"], event["workspaceId"]) == (
        "campaign.started",
        1,
        "V29ya3NwYWNlOjE",
    )
    assert datetime.fromisoformat(event["occurredAt"].replace("Z", "+00:00")) <= utcnow()
    assert list(event["data"]) == list(EVENT_TYPES["campaign.started"].fields)
    assert event["data"]["name"] == "Spring"
    assert event["data"]["status"] == "RUNNING"
    assert event["data"]["recipientsCount"] == 3
    (message,) = await messages(db)
    assert (message.status, message.attempts, message.response_code) == (
        WebhookMessageStatus.SUCCEEDED,
        1,
        204,
    )
    assert message.ordering_key == f"campaign:{campaign_id}"
    await upkeep.tick(runtime)
    assert len(queue.jobs) == 1, "nothing is due any more"


async def test_retries_back_off_after_500_then_succeed(db: Database, client: GuardedHttpClient) -> None:
    answers = iter([(500, b"busy"), (502, b""), (200, b"ok")])
    async with receiver(lambda _: next(answers)) as hooks:
        endpoint_id, _ = await make_endpoint(db, hooks.url, ["open"])
        await emit_one(db)
        clock = Clock()
        run = deliverer(db, client, clock)

        await run.run(endpoint_id)
        (m,) = await messages(db)
        assert (m.status, m.attempts, m.response_code, m.error) == (
            WebhookMessageStatus.PENDING,
            1,
            500,
            "HTTP 500: busy",
        )
        assert m.next_attempt_at == clock.now + timedelta(seconds=5)

        await run.run(endpoint_id)
        assert len(hooks.requests) == 1, "not due yet"
        clock.advance(seconds=5)
        await run.run(endpoint_id)
        (m,) = await messages(db)
        assert (m.attempts, m.response_code) == (2, 502)
        assert m.next_attempt_at == clock.now + timedelta(minutes=1)

        clock.advance(seconds=59)
        await run.run(endpoint_id)
        assert len(hooks.requests) == 2
        clock.advance(seconds=1)
        await run.run(endpoint_id)
        first, second, third = await hooks.wait_for(3)

    (m,) = await messages(db)
    assert (m.status, m.attempts, m.response_code, m.error, m.next_attempt_at) == (
        WebhookMessageStatus.SUCCEEDED,
        3,
        200,
        None,
        None,
    )
    assert {r.headers["webhook-id"] for r in (first, second, third)} == {m.event_id}
    assert len({r.headers["webhook-timestamp"] for r in (first, second, third)}) == 3, (
        "each attempt signs anew"
    )
    third_time = int(third.headers["webhook-timestamp"])
    assert third_time == int(clock.now.timestamp())
    async with db.session() as s:
        log = list((await s.execute(select(WebhookAttempt).order_by(WebhookAttempt.id))).scalars())
    assert [(a.succeeded, a.response_code) for a in log] == [(False, 500), (False, 502), (True, 200)]
    assert (await endpoint_row(db, endpoint_id)).failing_since is None


async def test_a_message_fails_for_good_after_nine_attempts(db: Database, client: GuardedHttpClient) -> None:
    async with receiver(always(503)) as hooks:
        endpoint_id, _ = await make_endpoint(db, hooks.url, ["open"])
        await emit_one(db)
        clock = Clock()
        run = deliverer(db, client, clock)
        for _ in range(12):
            await run.run(endpoint_id)
            clock.advance(hours=9)
        assert len(hooks.requests) == 9
    (m,) = await messages(db)
    assert (m.status, m.attempts, m.next_attempt_at) == (WebhookMessageStatus.FAILED, 9, None)


async def test_three_days_of_failures_disable_the_endpoint(db: Database, client: GuardedHttpClient) -> None:
    healthy = True
    async with receiver(lambda _: (204 if healthy else 500, b"")) as hooks:
        endpoint_id, _ = await make_endpoint(db, hooks.url, ["open"])
        clock = Clock()
        run = deliverer(db, client, clock)
        healthy = False
        await emit_one(db)
        await run.run(endpoint_id)
        started = (await endpoint_row(db, endpoint_id)).failing_since
        assert started == clock.now
        # A success in between starts the count again.
        clock.advance(hours=30)
        healthy = True
        await emit_one(db)
        await run.run(endpoint_id)
        assert (await endpoint_row(db, endpoint_id)).failing_since is None

        healthy = False
        fail_start = clock.now
        for _ in range(6):  # an event every 12 hours, each failing: 2.5 days
            await emit_one(db)
            await run.run(endpoint_id)
            assert (await endpoint_row(db, endpoint_id)).status is WebhookEndpointStatus.ENABLED
            clock.advance(hours=12)
        assert clock.now - fail_start == timedelta(days=3)
        await emit_one(db)
        outcome = await run.run(endpoint_id)
        assert outcome.disabled

    row = await endpoint_row(db, endpoint_id)
    assert row.status is WebhookEndpointStatus.DISABLED
    assert row.disabled_reason is not None and "failed for 3.0 days" in row.disabled_reason
    assert "HTTP 500" in row.disabled_reason
    assert all(m.status is not WebhookMessageStatus.PENDING for m in await messages(db))
    # A disabled endpoint receives nothing more: emission skips it, and no job takes it.
    await emit_one(db)
    assert len(await messages(db)) == 9
    assert not (await deliverer(db, client, clock).run(endpoint_id)).claimed


async def test_redelivery_sends_the_same_event_again(
    db: Database, client: GuardedHttpClient, hooks: Receiver
) -> None:
    endpoint_id, secret = await make_endpoint(db, hooks.url, ["open"])
    await emit_one(db)
    clock = Clock()
    await deliverer(db, client, clock).run(endpoint_id)
    (original,) = await messages(db)
    async with db.transaction() as s:
        copy = await endpoints.redeliver(s, original.id, now=clock.now)
    await deliverer(db, client, clock).run(endpoint_id)
    first, second = await hooks.wait_for(2)
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    Webhook(secret).verify(second.body, second.headers)
    rows = await messages(db)
    assert [(r.id, r.status, r.redelivery_of) for r in rows] == [
        (original.id, WebhookMessageStatus.SUCCEEDED, None),
        (copy.id, WebhookMessageStatus.SUCCEEDED, original.id),
    ]

    async with db.transaction() as s:
        await endpoints.update_endpoint(
            s, endpoint_id, endpoints.EndpointInput(enabled=False), allow_private=True
        )
    with pytest.raises(DomainError) as refused:
        async with db.transaction() as s:
            await endpoints.redeliver(s, original.id)
    assert refused.value.errors[0].code is ErrorCode.INVALID_STATE


# A window of 2 makes rounds overlap: a round is sent while the one before is still being written.
@pytest.mark.parametrize("window", [500, 2])
async def test_messages_of_one_key_arrive_in_order_and_wait_behind_a_failing_one(
    db: Database, client: GuardedHttpClient, window: int
) -> None:
    failed_once: set[str] = set()

    def answer(request: Received) -> tuple[int, bytes]:
        label = body_of(request)["data"]["label"]
        if label == "a1" and label not in failed_once:
            failed_once.add(label)
            return 500, b""
        return 204, b""

    async with receiver(answer) as hooks:
        endpoint_id, _ = await make_endpoint(db, hooks.url, ["open"])
        for label, key in [
            ("a1", "s:1"),
            ("b1", "s:2"),
            ("a2", "s:1"),
            ("free", None),
            ("b2", "s:2"),
            ("a3", "s:1"),
        ]:
            await emit_one(db, key=key, label=label)
        clock = Clock()
        run = deliverer(db, client, clock, concurrency=8, window=window)
        await run.run(endpoint_id)
        labels = [body_of(r)["data"]["label"] for r in hooks.requests]
        assert sorted(labels) == ["a1", "b1", "b2", "free"], "a2 and a3 wait behind the failed a1"
        assert labels.index("b1") < labels.index("b2")

        await emit_one(db, key="s:1", label="a4")
        await run.run(endpoint_id)
        assert len(hooks.requests) == 4, "a newer message of the key waits too"

        clock.advance(seconds=5)
        await run.run(endpoint_id)
        labels = [body_of(r)["data"]["label"] for r in await hooks.wait_for(8)]
    assert [x for x in labels if x.startswith("a")] == ["a1", "a1", "a2", "a3", "a4"]
    assert all(m.status is WebhookMessageStatus.SUCCEEDED for m in await messages(db))


async def test_workspace_two_never_receives_workspace_one_events(
    db: Database, client: GuardedHttpClient
) -> None:
    other = await make_workspace(db, "other")
    async with receiver() as one, receiver() as two:
        mine, _ = await make_endpoint(db, one.url, ["open"])
        with workspace_scope(other):
            theirs, _ = await make_endpoint(db, two.url, ["open"])
        await emit_one(db, label="for one")
        clock = Clock()
        await deliverer(db, client, clock).run(mine)
        with workspace_scope(other):
            assert not (await deliverer(db, client, clock).run(theirs)).claimed or not two.requests
            assert await messages(db) == []
            with pytest.raises(NotFound):
                async with db.transaction() as s:
                    await endpoints.get_endpoint(s, mine)
        assert (await one.wait_for(1))[0].headers["webhook-id"]
        assert two.requests == []
        # Workspace 1's deliverer cannot take workspace 2's endpoint either.
        assert not (await deliverer(db, client, clock).run(theirs)).claimed
    (message,) = await messages(db)
    assert message.workspace_id == 1 and message.endpoint_id == mine


async def test_a_name_that_turned_private_fails_at_connect_time(
    db: Database, hooks: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {"hooks.example.test": ["93.184.216.34"]}

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(destinations, "resolve", resolve)
    url = f"http://hooks.example.test:{hooks.port}/hooks"
    endpoint_id, _ = await make_endpoint(db, url, ["open"], allow_private=False)
    answers["hooks.example.test"] = ["127.0.0.1"]  # the DNS answer changed after the check
    await emit_one(db)
    http = GuardedHttpClient(allow_private=False)
    try:
        await Deliverer(db, http, TEST_SECRET, DeliveryConfig(), clock=Clock()).run(endpoint_id)
    finally:
        await http.aclose()
    (m,) = await messages(db)
    assert m.status is WebhookMessageStatus.PENDING and m.response_code is None
    assert (
        m.error == "hooks.example.test resolves to 127.0.0.1, a loopback address: webhooks are not sent there"
    )
    assert hooks.requests == [] and hooks.connections == 0


async def test_refused_destinations_cannot_be_saved(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"localhost.example.test": ["127.0.0.1"]}.get(host) or []

    monkeypatch.setattr(destinations, "resolve", resolve)
    for url, code in [
        ("http://127.0.0.1:9/x", ErrorCode.DESTINATION_REFUSED),
        ("http://localhost.example.test/x", ErrorCode.DESTINATION_REFUSED),
        ("http://[::1]/x", ErrorCode.DESTINATION_REFUSED),
        ("http://169.254.169.254/latest/meta-data", ErrorCode.DESTINATION_REFUSED),
        ("ftp://hooks.example.com/", ErrorCode.INVALID_URL),
    ]:
        with pytest.raises(DomainError) as refused:
            await make_endpoint(db, url, ["open"], allow_private=False)
        assert refused.value.errors[0].code is code, url
    # The setting lifts the rule, except for the metadata services.
    await make_endpoint(db, "http://127.0.0.1:9/x", ["open"], allow_private=True)
    with pytest.raises(DomainError):
        await make_endpoint(db, "http://169.254.169.254/", ["open"], allow_private=True)


async def test_emission_costs_no_statement_when_nobody_listens_and_sees_new_endpoints_at_once(
    db: Database, hooks: Receiver
) -> None:
    async with db.transaction() as s:
        with recorded_statements(db) as first:
            assert await emit.emit(s, "open", {}, workspace_id=1) == 0
        with recorded_statements(db) as later:
            for _ in range(100):
                assert await emit.emit(s, "open", {}, workspace_id=1) == 0
    assert len(first) == 1 and later == [], "one look-up, then the cache answers"

    await make_endpoint(db, hooks.url, ["click"])
    async with db.transaction() as s:
        assert await emit.emit(s, "open", {}, workspace_id=1) == 0
        assert await emit.emit(s, "click", {}, workspace_id=1) == 1


async def test_another_process_endpoint_is_seen_within_the_cache_age(db: Database, hooks: Receiver) -> None:
    ticks = [0.0]
    monkey = emit.Subscriptions(clock=lambda: ticks[0])
    async with db.transaction() as s:
        assert await monkey.listeners(s, 1) == {}
    async with db.transaction() as s:  # made "elsewhere": this cache is not told
        await endpoints.create_endpoint(
            s, hooks.url, ["open"], "", instance_secret=TEST_SECRET, allow_private=True
        )
    async with db.transaction() as s:
        assert await monkey.listeners(s, 1) == {}
        ticks[0] = emit.MAX_AGE_SECONDS + 0.1
        assert list(await monkey.listeners(s, 1)) == ["open"]


async def test_the_ticker_skips_disabled_and_busy_endpoints(db: Database, hooks: Receiver) -> None:
    queue = RecordingQueue()
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://t", jobs=queue)
    a, _ = await make_endpoint(db, hooks.url, ["open"])
    b, _ = await make_endpoint(db, hooks.url, ["open"])
    c, _ = await make_endpoint(db, hooks.url, ["open"])
    await emit_one(db)
    now = utcnow() + timedelta(seconds=1)
    async with db.transaction() as s:
        await endpoints.update_endpoint(s, b, endpoints.EndpointInput(enabled=False), allow_private=True)
        row = await s.get(WebhookEndpoint, c)
        assert row is not None
        row.lease_until = now + timedelta(seconds=30)
    assert await dispatch.due_endpoints(runtime, now) == [a]
    assert await dispatch.due_endpoints(runtime, now) == []
    later = now + timedelta(seconds=runtime.webhooks.config.requeue_after_seconds + 1)
    assert await dispatch.due_endpoints(runtime, later) == [a, c], (
        "lost jobs and expired leases are taken again"
    )


async def test_an_import_that_fails_is_announced(db: Database, hooks: Receiver) -> None:
    from emailkit.domain.audience.imports.run import finish_failed

    await make_endpoint(db, hooks.url, ["import.finished"])
    import_id = await start_import(db, b"email\nx@example.com\n")
    await finish_failed(db, import_id, None, "The import could not be queued: test", None)
    (m,) = await messages(db)
    data = json.loads(m.payload)["data"]
    assert data["status"] == "FAILED" and data["error"].endswith("test")
    assert list(data) == list(EVENT_TYPES["import.finished"].fields)


async def test_campaign_transitions_announce_themselves_in_order(db: Database, hooks: Receiver) -> None:
    await make_endpoint(
        db, hooks.url, ["campaign.started", "campaign.paused", "campaign.finished", "campaign.failed"]
    )
    empty = await make_campaign(db, subscribers=0)
    running = await make_campaign(db, subscribers=2)
    async with db.transaction() as s:
        await lifecycle.start_campaign(s, empty)
        await lifecycle.start_campaign(s, running)
    async with db.transaction() as s:
        await lifecycle.pause_campaign(s, running)
        await lifecycle.resume_campaign(s, running)
    with all_workspaces():  # as the feedback policy runs: the workspace is looked up
        async with db.transaction() as s:
            assert await lifecycle.pause_automatically(s, running, "Complaint rate 0.5% over 0.3%")
            assert not await lifecycle.pause_automatically(s, running, "again")
    sent = [(m.ordering_key, json.loads(m.payload)) for m in await messages(db)]
    assert [(k, e["type"], e["data"]["status"]) for k, e in sent] == [
        (f"campaign:{empty}", "campaign.started", "FINISHED"),
        (f"campaign:{empty}", "campaign.finished", "FINISHED"),
        (f"campaign:{running}", "campaign.started", "RUNNING"),
        (f"campaign:{running}", "campaign.paused", "PAUSED"),
        (f"campaign:{running}", "campaign.paused", "PAUSED"),
    ]
    assert sent[-1][1]["data"]["reason"] == "Complaint rate 0.5% over 0.3%"
    assert all(e["workspaceId"] == "V29ya3NwYWNlOjE" for _, e in sent)


async def test_a_stale_cache_never_fails_the_change_it_reports(db: Database, hooks: Receiver) -> None:
    """Another process deleted (or disabled) an endpoint a few seconds ago and this one's cache still lists it:
    the event is written all the same, never dispatched, and the hourly prune clears it."""
    gone, _ = await make_endpoint(db, hooks.url, ["open"])
    off, _ = await make_endpoint(db, hooks.url, ["open"])
    async with db.transaction() as s:
        assert await emit.emit(s, "open", {}, workspace_id=1) == 2  # the cache now lists both
    async with db.transaction() as s:
        await endpoints.delete_endpoint(s, gone)
        await endpoints.update_endpoint(s, off, endpoints.EndpointInput(enabled=False), allow_private=True)
    # Not invalidated, as in a process that was not told.
    async with db.transaction() as s:
        assert await emit.emit(s, "open", {"stale": True}, workspace_id=1) == 2
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url="http://t", jobs=RecordingQueue())
    assert await dispatch.due_endpoints(runtime, utcnow() + timedelta(seconds=1)) == []
    await dispatch.prune(runtime, utcnow())
    rows = await messages(db)
    assert [(m.endpoint_id, m.status) for m in rows] == [(off, WebhookMessageStatus.FAILED)] * 2


async def test_settled_deliveries_become_sent_and_failed_events_only_when_someone_listens(
    db: Database, hooks: Receiver
) -> None:
    from emailkit.db.tables.sending import Delivery
    from emailkit.domain.webhooks_out import emitters

    campaign_id = await make_campaign(db, subscribers=2)
    async with db.transaction() as s:
        subs = list((await s.execute(select(Subscriber).order_by(Subscriber.id))).scalars())
        rows = [Delivery(campaign_id=campaign_id, subscriber_id=p.id, email=p.email) for p in subs]
        s.add_all(rows)
        await s.flush()
        ids = [r.id for r in rows]
    async with db.transaction() as s:
        with recorded_statements(db) as nobody:
            assert (
                await emitters.deliveries_settled(s, 1, sent=[(ids[0], "m-1")], failed=[(ids[1], "550")]) == 0
            )
    assert len(nobody) <= 1, "at most the cache's look-up"
    assert not await emit.wanted_in(db, 1, "delivery.sent")

    await make_endpoint(db, hooks.url, ["delivery.sent", "delivery.failed"])
    assert await emit.wanted_in(db, 1, "delivery.failed")
    async with db.transaction() as s:
        assert (
            await emitters.deliveries_settled(s, 1, sent=[(ids[0], "m-1")], failed=[(ids[1], "550 no")]) == 2
        )
    events = [json.loads(m.payload) for m in await messages(db)]
    assert [(e["type"], e["data"]["email"]) for e in events] == [
        ("delivery.sent", "s0@example.com"),
        ("delivery.failed", "s1@example.com"),
    ]
    assert events[0]["data"]["providerMessageId"] == "m-1" and events[1]["data"]["error"] == "550 no"
    assert list(events[0]["data"]) == list(EVENT_TYPES["delivery.sent"].fields)
    assert [m.ordering_key for m in await messages(db)] == [
        f"subscriber:{subs[0].id}",
        f"subscriber:{subs[1].id}",
    ]


async def test_serve_delivers_through_its_ticker_and_job_queue(
    db: Database, hooks: Receiver, tmp_path: Any
) -> None:
    """The whole path in an embedded `serve`: the ticker finds the due message, enqueues the Dramatiq job on the
    in-process broker, and a worker thread delivers it."""
    from emailkit.app import create_app
    from emailkit.settings import Settings

    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,
        data_dir=tmp_path,
        webhook_allow_private=True,  # type: ignore[arg-type]
    )
    _, secret = await make_endpoint(db, hooks.url, ["open"])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await emit_one(db, label="through the queue")
        (request,) = await hooks.wait_for(1, within=30)
    Webhook(secret).verify(request.body, request.headers)
    assert body_of(request)["data"] == {"label": "through the queue"}
    (m,) = await messages(db)
    assert m.status is WebhookMessageStatus.SUCCEEDED
