"""Campaigns, templates and transactional mail through the API are per workspace: an id of another workspace
(a list, a segment, a template, a campaign) is answered exactly like a missing one, and sendTransactional looks
the recipient up, and checks blocklist and suppressions, in the key's workspace only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import (
    MailingList,
    Segment,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignList, Delivery
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID, Workspace
from emailkit.domain.audience.suppressions import email_hash
from emailkit.schema.relay import parse_global_id, to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data, make_list

MISSING = 10**9
BERLIN = {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}

CREATE = """mutation($i: CreateCampaignInput!) {
  createCampaign(input: $i) { campaign { id } userErrors { field message code } } }"""
UPDATE = """mutation($i: UpdateCampaignInput!) {
  updateCampaign(input: $i) { campaign { id } userErrors { field message code } } }"""
SEND = """mutation($i: SendTransactionalInput!) {
  sendTransactional(input: $i) { delivery { id email status subscriber { id } } userErrors { field message code } }
}"""
# Every mutation that names a campaign by id, with the input it takes.
BY_CAMPAIGN_ID: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "updateCampaign": ("UpdateCampaignInput", lambda gid: {"id": gid, "name": "Renamed"}),
    "deleteCampaign": ("DeleteCampaignInput", lambda gid: {"id": gid}),
    "startCampaign": ("CampaignIdInput", lambda gid: {"id": gid}),
    "pauseCampaign": ("CampaignIdInput", lambda gid: {"id": gid}),
    "resumeCampaign": ("CampaignIdInput", lambda gid: {"id": gid}),
    "cancelCampaign": ("CampaignIdInput", lambda gid: {"id": gid}),
    "scheduleCampaign": (
        "ScheduleCampaignInput",
        lambda gid: {"id": gid, "sendAt": "2100-01-01T00:00:00+00:00"},
    ),
    "retryFailedDeliveries": ("RetryFailedDeliveriesInput", lambda gid: {"campaignId": gid}),
}


@dataclass
class Second:
    """Workspace 2 and what it holds, named by global id."""

    workspace_id: int
    key: str
    list: str
    segment: str
    template: str
    transactional: str
    campaign: str
    ada: int


def _suppression(addr: str) -> Suppression:
    return Suppression(email=addr, email_hash=email_hash(addr), reason=SuppressionReason.MANUAL, source="api")


@pytest.fixture
async def second(db: Database) -> Second:
    with all_workspaces():
        async with db.transaction() as s:
            workspace = Workspace(name="Second", slug="second")
            s.add(workspace)
            await s.flush()
    # Workspace 1 holds ada (blocklisted there) and a suppression of bob.
    async with db.transaction() as s:
        s.add_all(
            [
                Subscriber(email="ada@example.com", status=SubscriberStatus.BLOCKLISTED),
                _suppression("bob@example.com"),
            ]
        )
    with workspace_scope(workspace.id):
        key = await make_key(db)
        async with db.transaction() as s:
            lst = MailingList(name="News")
            segment = Segment(name="Berliners", filter=BERLIN)
            template = Template(
                name="Letter",
                kind=TemplateKind.CAMPAIGN,
                format=ContentFormat.HTML,
                subject="",
                body="<p>Hi</p>",
            )
            receipt = Template(
                name="Receipt",
                kind=TemplateKind.TRANSACTIONAL,
                format=ContentFormat.HTML,
                subject="Receipt",
                body="<p>Thanks {{ subscriber.email }}</p>",
            )
            ada = Subscriber(email="ada@example.com", name="Ada of two")
            s.add_all([lst, segment, template, receipt, ada, _suppression("cem@example.com")])
            await s.flush()
            campaign = Campaign(
                name="Theirs",
                subject="S",
                from_email="a@example.com",
                body="<p>x</p>",
                format=ContentFormat.HTML,
            )
            s.add(campaign)
            await s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
    return Second(
        workspace_id=workspace.id,
        key=key,
        list=to_global_id("MailingList", lst.id),
        segment=to_global_id("Segment", segment.id),
        template=to_global_id("Template", template.id),
        transactional=to_global_id("Template", receipt.id),
        campaign=to_global_id("Campaign", campaign.id),
        ada=ada.id,
    )


def campaign_input(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Ours",
        "subject": "Hello",
        "fromEmail": "news@example.com",
        "body": "<p>Hello</p>",
        "format": "HTML",
        **extra,
    }


async def user_errors(gql: GQL, query: str, field: str, variables: dict[str, Any], **kw: Any) -> Any:
    out = data(await gql(query, {"i": variables}, **kw))[field]
    assert not out.get("campaign") and not out.get("delivery")
    return out["userErrors"]


# (input field, Second attribute, node type, the code a missing id gets)
FOREIGN_IDS = [
    ("listIds", "list", "MailingList", "LIST_NOT_FOUND"),
    ("segmentIds", "segment", "Segment", "SEGMENT_NOT_FOUND"),
    ("templateId", "template", "Template", "TEMPLATE_NOT_FOUND"),
]


def _targets(field: str, gid: str) -> dict[str, Any]:
    if field == "templateId":
        return {"templateId": gid, "body": None, "format": None}
    return {field: [gid]}


@pytest.mark.parametrize(("field", "attr", "node", "code"), FOREIGN_IDS)
async def test_create_and_update_campaign_take_another_workspaces_ids_for_missing_ones(
    gql: GQL, second: Second, field: str, attr: str, node: str, code: str
) -> None:
    foreign, missing = getattr(second, attr), to_global_id(node, MISSING)
    ours = await make_list(gql, "Ours")
    base = campaign_input(listIds=[ours])
    refused = await user_errors(gql, CREATE, "createCampaign", {**base, **_targets(field, foreign)})
    assert refused == await user_errors(gql, CREATE, "createCampaign", {**base, **_targets(field, missing)})
    assert [e["code"] for e in refused] == [code]

    created = data(await gql(CREATE, {"i": base}))["createCampaign"]
    assert created["userErrors"] == []
    change = {"id": created["campaign"]["id"], **_targets(field, foreign)}
    refused = await user_errors(gql, UPDATE, "updateCampaign", change)
    missing_change = {"id": created["campaign"]["id"], **_targets(field, missing)}
    assert refused == await user_errors(gql, UPDATE, "updateCampaign", missing_change)
    assert [e["code"] for e in refused] == [code]

    # In their own workspace the same ids are fine.
    theirs = campaign_input(**({"listIds": [second.list]} | _targets(field, foreign)))
    out = data(await gql(CREATE, {"i": theirs}, key=second.key))["createCampaign"]
    assert out["userErrors"] == []


@pytest.mark.parametrize("mutation", sorted(BY_CAMPAIGN_ID))
async def test_another_workspaces_campaign_is_missing(
    gql: GQL, db: Database, second: Second, mutation: str
) -> None:
    input_type, make = BY_CAMPAIGN_ID[mutation]
    query = (
        f"mutation($i: {input_type}!) {{ {mutation}(input: $i) {{ userErrors {{ field message code }} }} }}"
    )
    foreign = data(await gql(query, {"i": make(second.campaign)}))[mutation]["userErrors"]
    missing = data(await gql(query, {"i": make(to_global_id("Campaign", MISSING))}))[mutation]["userErrors"]
    assert foreign == missing and foreign
    # Untouched in its own workspace.
    parsed = parse_global_id(second.campaign)
    assert parsed is not None
    with workspace_scope(second.workspace_id):
        async with db.session() as s:
            row = await s.get(Campaign, parsed[1])
    assert row is not None and (row.name, row.status.value) == ("Theirs", "DRAFT")


def send_input(template: str, to: str) -> dict[str, Any]:
    return {"templateId": template, "to": to, "fromEmail": "shop@example.com"}


async def test_send_transactional_needs_a_template_of_the_workspace(gql: GQL, second: Second) -> None:
    foreign = await user_errors(
        gql, SEND, "sendTransactional", send_input(second.transactional, "x@example.com")
    )
    missing = await user_errors(
        gql, SEND, "sendTransactional", send_input(to_global_id("Template", MISSING), "x@example.com")
    )
    assert foreign == missing and [e["code"] for e in foreign] == ["TEMPLATE_NOT_FOUND"]


async def test_send_transactional_checks_recipients_in_the_workspace(
    gql: GQL, db: Database, second: Second
) -> None:
    # ada is blocklisted and bob suppressed in workspace 1 only; cem is suppressed in workspace 2 only.
    sent = {}
    for to in ("ada@example.com", "bob@example.com"):
        out = data(await gql(SEND, {"i": send_input(second.transactional, to)}, key=second.key))[
            "sendTransactional"
        ]
        assert out["userErrors"] == [], to
        sent[to] = out["delivery"]
    # The recipient is the subscriber of that address in the key's workspace.
    assert sent["ada@example.com"]["subscriber"]["id"] == to_global_id("Subscriber", second.ada)
    assert sent["bob@example.com"]["subscriber"] is None
    refused = await user_errors(
        gql, SEND, "sendTransactional", send_input(second.transactional, "cem@example.com"), key=second.key
    )
    assert [e["code"] for e in refused] == ["SUPPRESSED"]

    with all_workspaces():
        async with db.session() as s:
            rows = (await s.execute(select(Delivery.email, Delivery.workspace_id))).all()
    assert sorted(tuple(r) for r in rows) == [
        ("ada@example.com", second.workspace_id),
        ("bob@example.com", second.workspace_id),
    ]

    # And the other way round, in workspace 1.
    async with db.transaction() as s:
        template = Template(
            name="Receipt",
            kind=TemplateKind.TRANSACTIONAL,
            format=ContentFormat.HTML,
            subject="R",
            body="<p>x</p>",
        )
        s.add(template)
        await s.flush()
    ours = to_global_id("Template", template.id)
    out = data(await gql(SEND, {"i": send_input(ours, "cem@example.com")}))["sendTransactional"]
    assert out["userErrors"] == [] and out["delivery"]["subscriber"] is None
    for to in ("ada@example.com", "bob@example.com"):
        refused = await user_errors(gql, SEND, "sendTransactional", send_input(ours, to))
        assert [e["code"] for e in refused] == ["SUPPRESSED"], to
    with all_workspaces():
        async with db.session() as s:
            cem = (
                await s.execute(select(Delivery.workspace_id).where(Delivery.email == "cem@example.com"))
            ).scalar_one()
    assert cem == DEFAULT_WORKSPACE_ID
