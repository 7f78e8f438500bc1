"""Two workspaces for the isolation test: B with one of everything (a sent campaign, its deliveries and events
included), all made through the API with B's key and named with a marker, and A with the objects a call needs
besides the ID under test. The whole app runs behind uvicorn with its embedded worker and the outbox provider.

A flow's run is the one object written straight into its workspace: runs are made by the flow runner, not the
API, and the world's flows are paused so that nothing moves while the checks compare snapshots.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from emailkit import globalid
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import no_scope, workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.automation import Flow, FlowRun, FlowRunStatus, FlowStepRun, FlowStepRunStatus
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Delivery
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.db.types import utcnow
from emailkit.settings import Settings
from emailkit.tasks.broker.queue import DramatiqJobQueue
from tests.support.database import truncate_all
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.live_server import live_server

# Every name, address and text of workspace B contains it, so a leak of B's data is visible in any answer.
MARKER = "b-secret"
# A's objects carry this one, so that A's data shown to B's readers (preference centre, confirmation) is visible.
A_MARKER = "a-own"
PUBLIC_URL = "http://127.0.0.1"
FINAL = {"FINISHED", "FAILED", "CANCELLED"}

Json = dict[str, Any]


class ApiFailure(AssertionError):
    """Building the world failed: an operation answered with errors."""


@dataclass
class Workspace:
    """One workspace's key and objects: type name -> {label: global id}."""

    id: int
    key: str
    objects: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, type_name: str, label: str, global_id: str) -> str:
        self.objects.setdefault(type_name, {})[label] = global_id
        return global_id

    def one(self, type_name: str) -> str:
        return next(iter(self.objects[type_name].values()))


@dataclass
class World:
    app: Starlette
    http: httpx.AsyncClient
    address: str
    db: Database
    outbox: Path
    a: Workspace
    b: Workspace
    # B's rows as database ids, for the REST checks: {"list": pk, "subscriber": pk, "delivery": pk, ...}
    # Steps of the set-up that did not work through the API (and were done another way, so that the isolation
    # checks still run): each one a bug of its area, failing test_workspace_b_is_made_through_the_api.
    gaps: list[str] = field(default_factory=list)

    async def gql(self, key: str, query: str, variables: Json | None = None) -> Json:
        resp = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status_code == 200, resp.text
        body: Json = resp.json()
        return body

    async def run(self, key: str, query: str, variables: Json | None = None) -> Json:
        """`data` of an operation that must succeed: no errors, no userErrors."""
        body = await self.gql(key, query, variables)
        if body.get("errors"):
            raise ApiFailure(f"{query}\n{json.dumps(body['errors'], indent=1)}")
        data: Json = body["data"]
        for payload in data.values():
            if isinstance(payload, dict) and payload.get("userErrors"):
                raise ApiFailure(f"{query}\n{payload['userErrors']}")
        return data

    async def settle(self, within: float = 30.0) -> None:
        """Wait until the worker has run every queued job and buffered opens and clicks are written."""
        jobs = self.app.state.runtime.jobs
        assert isinstance(jobs, DramatiqJobQueue)
        broker = jobs.broker
        for queue in sorted(broker.get_declared_queues()):
            await asyncio.to_thread(broker.join, queue, timeout=int(within * 1000))
        # The flush runs as the server's writer does: outside any workspace (not in the test's scope).
        with no_scope():
            await self.app.state.tracking.hits.flush()


@asynccontextmanager
async def running_world(db: Database, data_dir: Path) -> AsyncIterator[World]:
    """An emptied database, the app serving it, workspace B filled and workspace A (the default one) set up."""
    await truncate_all(db)
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,
        public_url=PUBLIC_URL,
        data_dir=data_dir,
        webhook_verify=False,
        api_rate_limit="",
        subscribe_rate_limit="1000/minute",
        from_email="hello@example.com",
        # Each workspace gets a webhook endpoint on a closed local port (deliveries that fail, then stop).
        webhook_allow_private=True,
    )
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        # As in production, the server and its background tasks (hit writer, worker, ticker) start outside any
        # workspace: they must not inherit the test's scope, which would hide a route that forgets its own.
        with no_scope():
            await stack.enter_async_context(app.router.lifespan_context(app))
            address = await stack.enter_async_context(live_server(app))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://{address}", timeout=60))
        with workspace_scope(DEFAULT_WORKSPACE_ID):
            a_key = await make_key(db, Role.ADMIN, "admin of A")
        b_id = await make_workspace(db, MARKER)
        b_key = await make_workspace_key(db, b_id)
        world = World(
            app,
            http,
            address,
            db,
            settings.outbox_dir,
            Workspace(DEFAULT_WORKSPACE_ID, a_key),
            Workspace(b_id, b_key),
        )
        await fill(world, world.b, MARKER)
        await fill(world, world.a, A_MARKER)
        yield world


# --- filling a workspace ----------------------------------------------------------------------------------

CREATE_TEMPLATE = "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } userErrors { field code message } } }"
CREATE_LIST = "mutation($i: CreateListInput!) { createList(input: $i) { list { id } userErrors { field code message } } }"
CREATE_SUBSCRIBER = "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } userErrors { field code message } } }"
CREATE_SEGMENT = "mutation($i: CreateSegmentInput!) { createSegment(input: $i) { segment { id } userErrors { field code message } } }"
CREATE_CAMPAIGN = "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } userErrors { field code message } } }"
START_CAMPAIGN = "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { campaign { id status } userErrors { field code message } } }"
ADD_SUPPRESSION = "mutation($i: AddSuppressionInput!) { addSuppression(input: $i) { suppression { id } userErrors { field code message } } }"
IMPORT = "mutation($i: ImportSubscribersInput!) { importSubscribers(input: $i) { import { id } userErrors { field code message } } }"
CREATE_KEY = "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { apiKey { id } userErrors { field code message } } }"
SEND_TRANSACTIONAL = "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { id } userErrors { field code message } } }"
CAMPAIGN_STATE = (
    "query($id: ID!) { campaign(id: $id) { status deliveries(first: 10) { edges { node { id status } } } } }"
)
IMPORT_STATE = "query($id: ID!) { import(id: $id) { status error } }"
DELIVERY_STATE = "query($id: ID!) { delivery(id: $id) { status } }"
EVENTS = "{ events(first: 10) { edges { node { id type } } } }"
TRACK_EVENT = "mutation($i: TrackEventInput!) { trackEvent(input: $i) { event { id } userErrors { field code message } } }"
CREATE_SENDING_DOMAIN = "mutation($i: CreateSendingDomainInput!) { createSendingDomain(input: $i) { sendingDomain { id } userErrors { field code message } } }"
CREATE_ENDPOINT = "mutation($i: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $i) { endpoint { id } userErrors { field code message } } }"
UPDATE_ENDPOINT = "mutation($i: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $i) { endpoint { id status } userErrors { field code message } } }"
ENDPOINT_DELIVERIES = (
    "query($id: ID!) { webhookEndpoint(id: $id) { deliveries(first: 5) { edges { node { id } } } } }"
)
AB_VARIANTS = "query($id: ID!) { campaign(id: $id) { variants { id } } }"
CREATE_SENDER = "mutation($i: CreateSenderInput!) { createSender(input: $i) { sender { id } userErrors { field code message } } }"
CREATE_FLOW = "mutation($i: CreateFlowInput!) { createFlow(input: $i) { flow { id } userErrors { field code message } } }"
PUBLISH_FLOW = "mutation($i: PublishFlowInput!) { publishFlow(input: $i) { flow { id } userErrors { field code message } } }"
PAUSE_FLOW = (
    "mutation($i: FlowIdInput!) { pauseFlow(input: $i) { flow { id } userErrors { field code message } } }"
)


async def _stop_listening(world: World, ws: Workspace, endpoint: str) -> None:
    """Keep the endpoint's delivery (of subscriber.created) and disable the endpoint, which fails what waits:
    from then on nothing of it changes while the checks compare snapshots."""
    found = await world.run(ws.key, ENDPOINT_DELIVERIES, {"id": endpoint})
    edges = found["webhookEndpoint"]["deliveries"]["edges"]
    assert edges, f"no webhook delivery in workspace {ws.id}"
    ws.add("WebhookDelivery", "delivery", edges[0]["node"]["id"])
    await world.run(ws.key, UPDATE_ENDPOINT, {"i": {"id": endpoint, "enabled": False}})


async def fill(world: World, ws: Workspace, mark: str) -> None:
    """One of everything in `ws`, every name and address carrying `mark`."""
    key = ws.key
    domain = f"{mark}.example"
    ws.add("Workspace", "workspace", globalid.encode("Workspace", ws.id))

    async def made(query: str, payload: str, node: str, values: Json) -> str:
        data = await world.run(key, query, {"i": values})
        global_id: str = data[payload][node]["id"]
        return global_id

    # Listening before the subscriber is made, so that a webhook delivery of its own exists.
    endpoint = ws.add(
        "WebhookEndpoint",
        "endpoint",
        await made(
            CREATE_ENDPOINT,
            "createWebhookEndpoint",
            "endpoint",
            {"url": f"http://127.0.0.1:9/{mark}", "events": ["subscriber.created"], "description": mark},
        ),
    )
    ws.add(
        "Sender",
        "sender",
        await made(
            CREATE_SENDER,
            "createSender",
            "sender",
            {"name": f"{mark} sender", "type": "OUTBOX", "settings": {"dir": f"sender-{ws.id}"}},
        ),
    )
    campaign_template = ws.add(
        "Template",
        "campaign",
        await made(
            CREATE_TEMPLATE,
            "createTemplate",
            "template",
            {
                "name": f"{mark} campaign template",
                "kind": "CAMPAIGN",
                "format": "HTML",
                "subject": f"{mark} news",
                "body": f'<html><body><p>{mark} hello {{{{ subscriber.name }}}}</p><a href="https://{domain}/x">{mark}</a></body></html>',
            },
        ),
    )
    transactional = ws.add(
        "Template",
        "transactional",
        await made(
            CREATE_TEMPLATE,
            "createTemplate",
            "template",
            {
                "name": f"{mark} transactional template",
                "kind": "TRANSACTIONAL",
                "format": "HTML",
                "subject": f"{mark} receipt",
                "body": f"<p>{mark} receipt</p>",
            },
        ),
    )
    mailing_list = ws.add(
        "MailingList",
        "list",
        await made(
            CREATE_LIST,
            "createList",
            "list",
            {
                "name": f"{mark} list",
                "description": f"{mark} list",
                "visibility": "PUBLIC",
                "optin": "SINGLE",
            },
        ),
    )
    ws.add(
        "Subscriber",
        "subscriber",
        await made(
            CREATE_SUBSCRIBER,
            "createSubscriber",
            "subscriber",
            {
                "email": f"reader@{domain}",
                "name": f"{mark} reader",
                "attributes": {"note": mark},
                "listIds": [mailing_list],
            },
        ),
    )
    await _stop_listening(world, ws, endpoint)
    ws.add(
        "SendingDomain",
        "domain",
        await made(CREATE_SENDING_DOMAIN, "createSendingDomain", "sendingDomain", {"domain": domain}),
    )
    # A custom event of the reader's, with an idempotency key (a row of custom_event_keys too).
    ws.add(
        "Event",
        "custom",
        await made(
            TRACK_EVENT,
            "trackEvent",
            "event",
            {
                "email": f"reader@{domain}",
                "name": f"{mark}.signed_up",
                "properties": {"note": mark},
                "idempotencyKey": f"{mark}-signup",
            },
        ),
    )
    ws.add(
        "Segment",
        "segment",
        await made(
            CREATE_SEGMENT,
            "createSegment",
            "segment",
            {"name": f"{mark} segment", "description": mark, "filter": {"list": {"listId": mailing_list}}},
        ),
    )

    def campaign(name: str) -> Json:
        return {
            "name": f"{mark} {name} campaign",
            "subject": f"{mark} {name}",
            "fromEmail": f"news@{domain}",
            "fromName": mark,
            "listIds": [mailing_list],
            "templateId": campaign_template,
        }

    ws.add("Campaign", "draft", await made(CREATE_CAMPAIGN, "createCampaign", "campaign", campaign("draft")))
    tested = {
        **campaign("tested"),
        "variants": [{"subject": f"{mark} one"}, {"subject": f"{mark} two"}],
        "abTest": {"testShare": 0.5, "metric": "OPENS", "waitSeconds": 3600},
    }
    # Kept apart from the other campaigns (a pseudo-type of the tables in the test): where a test needs one.
    ab_campaign = ws.add(
        "AbCampaign", "tested", await made(CREATE_CAMPAIGN, "createCampaign", "campaign", tested)
    )
    variants = (await world.run(key, AB_VARIANTS, {"id": ab_campaign}))["campaign"]["variants"]
    ws.add("CampaignVariant", "variant", variants[0]["id"])
    sent = ws.add(
        "Campaign", "sent", await made(CREATE_CAMPAIGN, "createCampaign", "campaign", campaign("sent"))
    )
    await world.run(key, START_CAMPAIGN, {"i": {"id": sent}})
    ws.add(
        "Suppression",
        "suppression",
        await made(
            ADD_SUPPRESSION, "addSuppression", "suppression", {"email": f"blocked@{domain}", "detail": mark}
        ),
    )
    csv = f"email,name\nimported@{domain},{mark} imported\n"
    ws.add(
        "Import",
        "import",
        await made(IMPORT, "importSubscribers", "import", {"csv": csv, "listIds": [mailing_list]}),
    )
    ws.add(
        "ApiKey",
        "key",
        await made(CREATE_KEY, "createApiKey", "apiKey", {"name": f"{mark} key", "role": "VIEWER"}),
    )
    ws.add(
        "Delivery",
        "transactional",
        await made(
            SEND_TRANSACTIONAL,
            "sendTransactional",
            "delivery",
            {"templateId": transactional, "to": f"buyer@{domain}", "fromEmail": f"shop@{domain}"},
        ),
    )
    await _add_flow(world, ws, mark)
    await world.settle()
    await _check_done(world, ws)
    await _add_events(world, ws, mark)


async def _add_flow(world: World, ws: Workspace, mark: str) -> None:
    """A published, then paused, flow naming the workspace's list, template and subscriber's engagement; and a
    completed run of its subscriber with one ledger row."""
    mailing_list, template = ws.objects["MailingList"]["list"], ws.objects["Template"]["campaign"]
    definition = {
        "name": f"{mark} flow",
        "trigger": {"type": "SUBSCRIBED", "listId": mailing_list},
        "steps": [
            {
                "key": "welcome",
                "type": "SEND",
                "templateId": template,
                "subject": f"{mark} welcome",
                "fromEmail": f"news@{mark}.example",
                "next": "opened",
            },
            {
                "key": "opened",
                "type": "BRANCH",
                "condition": {"engagement": {"event": "OPENED", "flowStep": "welcome"}},
                "then": "tag",
                "otherwise": "tag",
            },
            {"key": "tag", "type": "UPDATE", "setAttributes": {"note": mark}, "addListIds": [mailing_list]},
        ],
        "exitWhen": {"list": {"listId": mailing_list, "status": "UNSUBSCRIBED"}},
    }
    made = await world.run(ws.key, CREATE_FLOW, {"i": definition})
    flow = ws.add("Flow", "flow", made["createFlow"]["flow"]["id"])
    await world.run(ws.key, PUBLISH_FLOW, {"i": {"id": flow}})
    await world.run(ws.key, PAUSE_FLOW, {"i": {"id": flow}})
    flow_pk, subscriber = (
        globalid.pk_of(flow, "Flow"),
        globalid.pk_of(ws.objects["Subscriber"]["subscriber"], "Subscriber"),
    )
    with workspace_scope(ws.id):
        async with world.db.transaction() as session:
            row = await session.get(Flow, flow_pk)
            assert row is not None and row.version_id is not None
            run = FlowRun(
                flow_id=row.id,
                version_id=row.version_id,
                subscriber_id=subscriber,
                status=FlowRunStatus.COMPLETED,
                step_key="tag",
                visit=2,
                finished_at=utcnow(),
            )
            session.add(run)
            row.entered, row.completed = row.entered + 1, row.completed + 1
            await session.flush()
            session.add(
                FlowStepRun(
                    run_id=run.id,
                    flow_id=row.id,
                    step_key="welcome",
                    visit=1,
                    status=FlowStepRunStatus.SKIPPED,
                    detail=f"{mark} skipped",
                    finished_at=utcnow(),
                )
            )
            run_id = run.id
    ws.add("FlowRun", "run", globalid.encode("FlowRun", run_id))


async def _check_done(world: World, ws: Workspace) -> None:
    """The sent campaign finished with its delivery, the import finished; the campaign's delivery is recorded."""
    async with asyncio.timeout(30):
        while True:
            state = (await world.run(ws.key, CAMPAIGN_STATE, {"id": ws.objects["Campaign"]["sent"]}))[
                "campaign"
            ]
            if state["status"] in FINAL:
                break
            await asyncio.sleep(0.05)
    assert state["status"] == "FINISHED", state
    [edge] = state["deliveries"]["edges"]
    ws.add("Delivery", "campaign", edge["node"]["id"])
    imported = (await world.run(ws.key, IMPORT_STATE, {"id": ws.objects["Import"]["import"]}))["import"]
    if imported["status"] != "FINISHED":
        world.gaps.append(f"importSubscribers in {ws.id}: {imported}")


async def _add_events(world: World, ws: Workspace, mark: str) -> None:
    """A delivered and an open event about the campaign's delivery, through the provider webhook route (else
    written straight into the workspace, and the failure recorded as a gap)."""
    delivery = globalid.parse(ws.objects["Delivery"]["campaign"])
    assert delivery is not None
    email = f"reader@{mark}.example"
    payload = [
        {
            "email": email,
            "event": kind,
            "timestamp": 1_700_000_000 + i,
            "sg_event_id": f"{mark}-{kind}",
            "emailkit_delivery": str(delivery[1]),
        }
        for i, kind in enumerate(["delivered", "open"])
    ]
    resp = await world.http.post("/webhooks/sendgrid", content=json.dumps(payload).encode())
    await world.settle()
    edges = (await world.run(ws.key, EVENTS))["events"]["edges"]
    if resp.status_code != 200 or {e["node"]["type"] for e in edges} < {"DELIVERED", "OPEN"}:
        world.gaps.append(f"webhook events in {ws.id}: HTTP {resp.status_code}, events {edges}")
        await _write_event(world.db, ws.id, delivery[1], email)
        edges = (await world.run(ws.key, EVENTS))["events"]["edges"]
    ws.add("Event", "event", edges[0]["node"]["id"])


async def _write_event(db: Database, workspace_id: int, delivery_id: int, email: str) -> None:
    with workspace_scope(workspace_id):
        async with db.transaction() as session:
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            session.add(
                Event(
                    type=EventType.OPEN,
                    provider="sendgrid",
                    email=email,
                    occurred_at=utcnow(),
                    campaign_id=delivery.campaign_id,
                    delivery_id=delivery_id,
                    subscriber_id=delivery.subscriber_id,
                )
            )
