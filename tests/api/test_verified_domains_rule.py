"""EMAILKIT_REQUIRE_VERIFIED_DOMAINS: with the rule on, mail goes out only From a verified sending domain of its
own workspace (or a subdomain of one, or EMAILKIT_DKIM_DOMAIN): refused with DOMAIN_NOT_VERIFIED on fromEmail at
createCampaign, updateCampaign, startCampaign, scheduleCampaign and sendTransactional. Off, nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending_domains.config import DomainConfig
from tests.support.factories import make_workspace, make_workspace_key
from tests.support.graphql import CREATE_LIST, GQL, data
from tests.support.sending_domains import DELETE, create_domain, mark_verified

CREATE = (
    "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id fromEmail status } "
    "userErrors { field code message } } }"
)
UPDATE = (
    "mutation($i: UpdateCampaignInput!) { updateCampaign(input: $i) { campaign { id fromEmail name } "
    "userErrors { field code } } }"
)
START = (
    "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { campaign { id status } "
    "userErrors { field code } } }"
)
SCHEDULE = (
    "mutation($i: ScheduleCampaignInput!) { scheduleCampaign(input: $i) { campaign { id status } "
    "userErrors { field code } } }"
)
TEMPLATE = (
    "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } userErrors { code } } }"
)
SEND = (
    "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { id } "
    "userErrors { field code } } }"
)
NOT_VERIFIED = [{"field": "fromEmail", "code": "DOMAIN_NOT_VERIFIED"}]


@pytest.fixture
def rule(runtime: Runtime) -> DomainConfig:
    runtime.domains = DomainConfig(require_verified=True, trusted_domains=frozenset({"env.example.net"}))
    return runtime.domains


async def campaign_input(gql: GQL, from_email: str, key: str | None = None) -> dict[str, Any]:
    made = data(await gql(CREATE_LIST, {"i": {"name": "News", "optin": "SINGLE"}}, key=key))["createList"]
    return {
        "name": "Spring",
        "subject": "Hello",
        "fromEmail": from_email,
        "listIds": [made["list"]["id"]],
        "body": "<p>Hello</p>",
        "format": "HTML",
    }


async def create_campaign(gql: GQL, from_email: str, key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": await campaign_input(gql, from_email, key)}, key=key))[
        "createCampaign"
    ]
    return out


def codes(out: dict[str, Any]) -> list[dict[str, str]]:
    return [{"field": e["field"], "code": e["code"]} for e in out["userErrors"]]


async def verified_domain(gql: GQL, db: Database, name: str, key: str | None = None) -> str:
    made = (await create_domain(gql, name, key=key))["sendingDomain"]
    pk = globalid.pk_of(made["id"], "SendingDomain")
    assert pk is not None
    await mark_verified(db, pk)
    domain_id: str = made["id"]
    return domain_id


async def test_unverified_from_domains_are_refused_and_nothing_is_saved(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    refused = await create_campaign(gql, "news@example.com")
    assert refused["campaign"] is None and codes(refused) == NOT_VERIFIED
    assert "example.com is not a verified sending domain" in refused["userErrors"][0]["message"]
    # The address's own checks come first.
    malformed = await create_campaign(gql, "news@@example.com")
    assert codes(malformed) == [{"field": "fromEmail", "code": "INVALID_EMAIL"}]
    # Added but not verified yet: still refused.
    await create_domain(gql, "example.com")
    assert codes(await create_campaign(gql, "news@example.com")) == NOT_VERIFIED
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 0


async def test_verified_domains_their_subdomains_and_the_environment_domain_are_allowed(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    await verified_domain(gql, db, "example.com")
    for address in ("news@example.com", "News@Mail.Example.COM", "hello@env.example.net"):
        out = await create_campaign(gql, address)
        assert out["userErrors"] == [], address
    assert codes(await create_campaign(gql, "news@example.org")) == NOT_VERIFIED
    # A look-alike is not a subdomain.
    assert codes(await create_campaign(gql, "news@badexample.com")) == NOT_VERIFIED


async def test_update_is_checked_when_it_changes_the_from_address(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    domain_id = await verified_domain(gql, db, "example.com")
    campaign = (await create_campaign(gql, "news@example.com"))["campaign"]
    moved = data(await gql(UPDATE, {"i": {"id": campaign["id"], "fromEmail": "news@example.org"}}))
    assert codes(moved["updateCampaign"]) == NOT_VERIFIED
    # The domain is deleted: edits that leave the From address alone still go through...
    assert data(await gql(DELETE, {"i": {"id": domain_id}}))["deleteSendingDomain"]["userErrors"] == []
    renamed = data(await gql(UPDATE, {"i": {"id": campaign["id"], "name": "Renamed"}}))["updateCampaign"]
    assert renamed["userErrors"] == [] and renamed["campaign"]["fromEmail"] == "news@example.com"
    # ...but it can neither start nor be scheduled.
    started = data(await gql(START, {"i": {"id": campaign["id"]}}))["startCampaign"]
    assert codes(started) == NOT_VERIFIED
    scheduled = data(await gql(SCHEDULE, {"i": {"id": campaign["id"], "sendAt": "2031-01-01T09:00:00Z"}}))
    assert codes(scheduled["scheduleCampaign"]) == NOT_VERIFIED
    async with db.session() as session:
        row = await session.get(Campaign, globalid.pk_of(campaign["id"], "Campaign"))
        assert row is not None and row.status.value == "DRAFT"


async def test_a_verified_campaign_starts(gql: GQL, db: Database, rule: DomainConfig) -> None:
    await verified_domain(gql, db, "example.com")
    campaign = (await create_campaign(gql, "news@example.com"))["campaign"]
    started = data(await gql(START, {"i": {"id": campaign["id"]}}))["startCampaign"]
    assert started["userErrors"] == [] and started["campaign"]["status"] in {"RUNNING", "FINISHED"}


async def test_send_transactional_from_an_unverified_domain_is_refused(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    made = data(
        await gql(
            TEMPLATE,
            {
                "i": {
                    "name": "Receipt",
                    "kind": "TRANSACTIONAL",
                    "format": "HTML",
                    "subject": "R",
                    "body": "<p>R</p>",
                }
            },
        )
    )["createTemplate"]
    send = {"templateId": made["template"]["id"], "to": "buyer@example.org", "fromEmail": "shop@example.com"}
    refused = data(await gql(SEND, {"i": send}))["sendTransactional"]
    assert refused == {"delivery": None, "userErrors": NOT_VERIFIED}
    await verified_domain(gql, db, "example.com")
    allowed = data(await gql(SEND, {"i": send}))["sendTransactional"]
    assert {"field": "fromEmail", "code": "DOMAIN_NOT_VERIFIED"} not in allowed["userErrors"]


async def test_another_workspace_s_verified_domain_does_not_count(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    other = await make_workspace(db, "other")
    other_key = await make_workspace_key(db, other)
    await verified_domain(gql, db, "example.com", key=other_key)
    assert (await create_campaign(gql, "news@example.com", key=other_key))["userErrors"] == []
    assert codes(await create_campaign(gql, "news@example.com")) == NOT_VERIFIED


async def test_with_the_rule_off_any_from_domain_goes(gql: GQL, runtime: Runtime) -> None:
    assert runtime.domains.require_verified is False
    out = await create_campaign(gql, "news@unverified.example")
    assert out["userErrors"] == []


CREATE_FLOW = (
    "mutation($i: CreateFlowInput!) { createFlow(input: $i) { flow { id } userErrors { field code } } }"
)
PUBLISH_FLOW = "mutation($i: PublishFlowInput!) { publishFlow(input: $i) { flow { id status } userErrors { field code } } }"


async def test_a_flow_sending_from_an_unverified_domain_is_not_published(
    gql: GQL, db: Database, rule: DomainConfig
) -> None:
    made = data(await gql(CREATE_LIST, {"i": {"name": "Welcome", "optin": "SINGLE"}}))["createList"]
    template = data(
        await gql(
            TEMPLATE,
            {"i": {"name": "Hi", "kind": "CAMPAIGN", "format": "HTML", "subject": "Hi", "body": "<p>Hi</p>"}},
        )
    )["createTemplate"]["template"]["id"]
    definition = {
        "name": "Welcome",
        "trigger": {"type": "SUBSCRIBED", "listId": made["list"]["id"]},
        "steps": [
            {"key": "wait", "type": "WAIT", "waitSeconds": 3600, "next": "hello"},
            {
                "key": "hello",
                "type": "SEND",
                "templateId": template,
                "subject": "Welcome",
                "fromEmail": "team@example.com",
            },
        ],
    }
    # A draft may say anything...
    flow = data(await gql(CREATE_FLOW, {"i": definition}))["createFlow"]
    assert flow["userErrors"] == []
    # ...the version people enter on may not.
    refused = data(await gql(PUBLISH_FLOW, {"i": {"id": flow["flow"]["id"]}}))["publishFlow"]
    assert codes(refused) == [{"field": "steps[1].fromEmail", "code": "DOMAIN_NOT_VERIFIED"}]
    await verified_domain(gql, db, "example.com")
    published = data(await gql(PUBLISH_FLOW, {"i": {"id": flow["flow"]["id"]}}))["publishFlow"]
    assert published["userErrors"] == [] and published["flow"]["status"] == "ACTIVE"


async def test_a_scheduled_campaign_whose_domain_went_fails_to_start_and_says_why(
    gql: GQL, db: Database, runtime: Runtime, rule: DomainConfig
) -> None:
    from datetime import UTC, datetime

    from emailkit.domain.sending.scheduler import start_due_campaigns

    domain_id = await verified_domain(gql, db, "example.com")
    campaign = (await create_campaign(gql, "news@example.com"))["campaign"]
    scheduled = data(await gql(SCHEDULE, {"i": {"id": campaign["id"], "sendAt": "2031-01-01T09:00:00Z"}}))
    assert scheduled["scheduleCampaign"]["userErrors"] == []
    assert data(await gql(DELETE, {"i": {"id": domain_id}}))["deleteSendingDomain"]["userErrors"] == []
    assert await start_due_campaigns(runtime, datetime(2031, 1, 1, 9, 1, tzinfo=UTC)) == []
    async with db.session() as session:
        row = await session.get(Campaign, globalid.pk_of(campaign["id"], "Campaign"))
    assert row is not None and row.status.value == "FAILED"
    assert (
        row.status_reason is not None and "example.com is not a verified sending domain" in row.status_reason
    )
