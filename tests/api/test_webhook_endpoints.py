"""The webhook endpoints API: the secret shown once, userErrors with stable codes (URL, event names, refused
destinations), ADMIN only, the delivery log with its attempts, redelivery, and workspaces kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.access import Role
from emailkit.domain.webhooks_out import destinations, emit, endpoints
from emailkit.domain.webhooks_out.delivery import Deliverer, DeliveryConfig
from emailkit.providers.webhook_client import GuardedHttpClient
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.graphql import GQL, data
from tests.support.webhook_receiver import Receiver, receiver

ENDPOINT_FIELDS = "id url description events status enabled disabledReason secret createdAt"
CREATE = (
    "mutation($i: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $i) { endpoint { "
    + ENDPOINT_FIELDS
    + " } userErrors { field code message } } }"
)
UPDATE = (
    "mutation($i: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $i) { endpoint { "
    + ENDPOINT_FIELDS
    + " } userErrors { field code message } } }"
)
DELETE = (
    "mutation($i: DeleteWebhookEndpointInput!) { deleteWebhookEndpoint(input: $i) { deletedId "
    "userErrors { code } } }"
)
ONE = "query($id: ID!) { webhookEndpoint(id: $id) { " + ENDPOINT_FIELDS + " } }"
LIST = "{ webhookEndpoints { totalCount edges { node { id url secret } } } }"
DELIVERIES = """query($id: ID!) { webhookEndpoint(id: $id) { deliveries(first: 10) { totalCount edges { node {
  id eventId eventType status responseCode durationMs attemptCount nextAttemptAt lastAttemptAt error createdAt
  deliveredAt payload redeliveryOf attempts { attemptedAt succeeded responseCode durationMs error } } } } } }"""
REDELIVER = (
    "mutation($i: RedeliverWebhookInput!) { redeliverWebhook(input: $i) { delivery { id status redeliveryOf } "
    "userErrors { field code } } }"
)

PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names resolve without a DNS server: *.example.com to a public address, inside.example.test to loopback."""

    async def resolve(host: str, port: int) -> list[str]:
        if host == "inside.example.test":
            return ["127.0.0.1"]
        if host.endswith("example.com"):
            return [PUBLIC]
        raise OSError("no such name")

    monkeypatch.setattr(destinations, "resolve", resolve)
    emit.subscriptions.invalidate()


async def create(
    gql: GQL,
    url: str = "https://hooks.example.com/in",
    events: list[str] | None = None,
    *,
    description: str = "",
    key: str | None = None,
) -> dict[str, Any]:
    chosen = ["campaign.started", "open"] if events is None else events
    variables = {"i": {"url": url, "events": chosen, "description": description}}
    out: dict[str, Any] = data(await gql(CREATE, variables, key=key))["createWebhookEndpoint"]
    return out


async def test_create_shows_the_secret_once(gql: GQL) -> None:
    out = await create(gql, description="CRM sync")
    assert out["userErrors"] == []
    endpoint = out["endpoint"]
    assert endpoint["url"] == "https://hooks.example.com/in"
    assert endpoint["events"] == ["campaign.started", "open"]
    assert (endpoint["status"], endpoint["enabled"], endpoint["description"]) == ("ENABLED", True, "CRM sync")
    assert endpoint["secret"].startswith("whsec_") and len(endpoint["secret"]) >= 6 + 32
    again = data(await gql(ONE, {"id": endpoint["id"]}))["webhookEndpoint"]
    assert again["secret"] is None and again["url"] == endpoint["url"]
    listed = data(await gql(LIST))["webhookEndpoints"]
    assert listed["totalCount"] == 1 and listed["edges"][0]["node"]["secret"] is None


@pytest.mark.parametrize(
    ("url", "events", "field", "code"),
    [
        ("hooks.example.com/in", ["open"], "url", "INVALID_URL"),
        ("ftp://hooks.example.com/in", ["open"], "url", "INVALID_URL"),
        ("https://user:secret@hooks.example.com/", ["open"], "url", "INVALID_URL"),
        ("https://hooks.example.com/in", ["opened"], "events", "UNKNOWN_EVENT"),
        ("https://hooks.example.com/in", [], "events", "REQUIRED"),
        ("http://127.0.0.1:8080/in", ["open"], "url", "DESTINATION_REFUSED"),
        ("http://10.0.0.5/in", ["open"], "url", "DESTINATION_REFUSED"),
        ("http://inside.example.test/in", ["open"], "url", "DESTINATION_REFUSED"),
        ("http://169.254.169.254/latest/meta-data/", ["open"], "url", "DESTINATION_REFUSED"),
        ("http://[fd00:ec2::254]/", ["open"], "url", "DESTINATION_REFUSED"),
    ],
)
async def test_bad_input_is_a_user_error_with_a_stable_code(
    gql: GQL, url: str, events: list[str], field: str, code: str
) -> None:
    out = await create(gql, url, events)
    assert out["endpoint"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(field, code)]
    assert data(await gql(LIST))["webhookEndpoints"]["totalCount"] == 0


async def test_a_refused_name_says_what_it_resolves_to(gql: GQL) -> None:
    out = await create(gql, "http://inside.example.test/in")
    assert out["userErrors"][0]["message"] == (
        "inside.example.test resolves to 127.0.0.1, a loopback address: webhooks are not sent there"
    )


async def test_flow_events_are_accepted_and_listed(gql: GQL) -> None:
    out = await create(gql, events=["flow.entered", "flow.completed"])
    assert out["userErrors"] == []
    types = data(await gql("{ webhookEventTypes { name reserved dataFields } }"))["webhookEventTypes"]
    by_name = {t["name"]: t for t in types}
    assert len(by_name) == 17
    # Emitted since automation landed: none is reserved any more.
    assert not any(t["reserved"] for t in types)
    assert by_name["flow.entered"]["dataFields"] == ["flowId", "runId", "subscriberId"]
    assert by_name["click"]["dataFields"] == [
        "deliveryId",
        "campaignId",
        "subscriberId",
        "email",
        "url",
        "occurredAt",
    ]


async def test_only_admin_keys_manage_endpoints(gql: GQL, db: Database) -> None:
    editor = await make_key(db, Role.EDITOR, "editor")
    body = await gql(CREATE, {"i": {"url": "https://hooks.example.com/", "events": ["open"]}}, key=editor)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(LIST, key=editor)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_update_disable_enable_and_delete(gql: GQL) -> None:
    endpoint_id = (await create(gql))["endpoint"]["id"]
    out = data(
        await gql(
            UPDATE,
            {
                "i": {
                    "id": endpoint_id,
                    "url": "https://other.example.com/x",
                    "events": ["click"],
                    "description": "d",
                }
            },
        )
    )["updateWebhookEndpoint"]
    assert out["userErrors"] == []
    assert (out["endpoint"]["url"], out["endpoint"]["events"], out["endpoint"]["secret"]) == (
        "https://other.example.com/x",
        ["click"],
        None,
    )
    off = data(await gql(UPDATE, {"i": {"id": endpoint_id, "enabled": False}}))["updateWebhookEndpoint"][
        "endpoint"
    ]
    assert (off["status"], off["enabled"], off["disabledReason"]) == (
        "DISABLED",
        False,
        "Disabled through the API",
    )
    on = data(await gql(UPDATE, {"i": {"id": endpoint_id, "enabled": True}}))["updateWebhookEndpoint"][
        "endpoint"
    ]
    assert (on["status"], on["disabledReason"]) == ("ENABLED", None)
    bad = data(await gql(UPDATE, {"i": {"id": endpoint_id, "url": "http://127.0.0.1/"}}))[
        "updateWebhookEndpoint"
    ]
    assert [e["code"] for e in bad["userErrors"]] == ["DESTINATION_REFUSED"]

    deleted = data(await gql(DELETE, {"i": {"id": endpoint_id}}))["deleteWebhookEndpoint"]
    assert deleted == {"deletedId": endpoint_id, "userErrors": []}
    assert data(await gql(ONE, {"id": endpoint_id}))["webhookEndpoint"] is None
    again = data(await gql(DELETE, {"i": {"id": endpoint_id}}))["deleteWebhookEndpoint"]
    assert again["userErrors"] == [{"code": "NOT_FOUND"}]


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    async with receiver() as box:
        yield box


async def _deliver(db: Database, endpoint_pk: int) -> None:
    http = GuardedHttpClient(allow_private=True)
    try:
        await Deliverer(db, http, TEST_SECRET, DeliveryConfig(allow_private=True)).run(endpoint_pk)
    finally:
        await http.aclose()


async def test_the_delivery_log_and_redelivery(gql: GQL, db: Database, hooks: Receiver) -> None:
    async with db.transaction() as s:
        row, secret = await endpoints.create_endpoint(
            s, hooks.url, ["open"], "", instance_secret=TEST_SECRET, allow_private=True
        )
    endpoint_pk = row.id
    endpoint_id = globalid.encode("WebhookEndpoint", endpoint_pk)
    emit.subscriptions.invalidate()
    async with db.transaction() as s:
        await emit.emit(s, "open", {"n": 1}, workspace_id=1)
    await _deliver(db, endpoint_pk)
    (request,) = await hooks.wait_for(1)
    Webhook(secret).verify(request.body, request.headers)

    log = data(await gql(DELIVERIES, {"id": endpoint_id}))["webhookEndpoint"]["deliveries"]
    assert log["totalCount"] == 1
    node = log["edges"][0]["node"]
    assert (node["eventType"], node["status"], node["responseCode"], node["attemptCount"]) == (
        "open",
        "SUCCEEDED",
        204,
        1,
    )
    assert node["eventId"] == request.headers["webhook-id"] and node["payload"] == request.body.decode()
    assert node["nextAttemptAt"] is None and node["error"] is None and node["deliveredAt"] is not None
    assert node["durationMs"] >= 0
    assert [(a["succeeded"], a["responseCode"]) for a in node["attempts"]] == [(True, 204)]

    again = data(await gql(REDELIVER, {"i": {"deliveryId": node["id"]}}))["redeliverWebhook"]
    assert again["userErrors"] == []
    assert (again["delivery"]["status"], again["delivery"]["redeliveryOf"]) == ("PENDING", node["id"])
    await _deliver(db, endpoint_pk)
    second = (await hooks.wait_for(2))[1]
    assert second.headers["webhook-id"] == request.headers["webhook-id"]
    log = data(await gql(DELIVERIES, {"id": endpoint_id}))["webhookEndpoint"]["deliveries"]
    assert [e["node"]["status"] for e in log["edges"]] == ["SUCCEEDED", "SUCCEEDED"]

    bad = data(await gql(REDELIVER, {"i": {"deliveryId": endpoint_id}}))["redeliverWebhook"]
    assert bad["userErrors"] == [{"field": "deliveryId", "code": "INVALID_ID"}]


async def test_another_workspace_endpoint_and_deliveries_are_not_found(gql: GQL, db: Database) -> None:
    other = await make_workspace(db, "other")
    other_key = await make_workspace_key(db, other)
    theirs = (await create(gql, key=other_key))["endpoint"]["id"]
    with workspace_scope(other):
        async with db.transaction() as s:
            await emit.emit(s, "open", {}, workspace_id=other)
    their_delivery = data(await gql(DELIVERIES, {"id": theirs}, key=other_key))["webhookEndpoint"][
        "deliveries"
    ]
    delivery_id = their_delivery["edges"][0]["node"]["id"]

    assert data(await gql(ONE, {"id": theirs}))["webhookEndpoint"] is None
    assert data(await gql(LIST))["webhookEndpoints"]["totalCount"] == 0
    for query, variables, name in [
        (UPDATE, {"i": {"id": theirs, "description": "mine now"}}, "updateWebhookEndpoint"),
        (DELETE, {"i": {"id": theirs}}, "deleteWebhookEndpoint"),
        (REDELIVER, {"i": {"deliveryId": delivery_id}}, "redeliverWebhook"),
    ]:
        out = data(await gql(query, variables))[name]
        assert [e["code"] for e in out["userErrors"]] == ["NOT_FOUND"], name
    # Theirs is untouched.
    mine_view = data(await gql(ONE, {"id": theirs}, key=other_key))["webhookEndpoint"]
    assert mine_view["description"] == "" and mine_view["status"] == "ENABLED"
