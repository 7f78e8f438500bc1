"""A/B tests through GraphQL: setting one up (and every bad input as a userError with a stable code),
pickWinner, the per-variant stats with the winner's lift and significance on known numbers, the live
campaignStats subscription, and workspace isolation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from websockets.asyncio.client import connect

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.content import TemplateKind
from emailkit.db.tables.feedback import CampaignVariantStats
from emailkit.db.tables.sending import CampaignBatch, CampaignVariant, Delivery
from emailkit.schema.relay import parse_global_id, to_global_id
from tests.api.test_analytics import next_stats, sendgrid, server  # noqa: F401 (fixtures)
from tests.api.test_campaigns import make_template
from tests.support.ab import KeepingProvider, make_sender, run_all, seed_audience
from tests.support.factories import make_key, make_workspace
from tests.support.graphql import GQL, data

VARIANT_FIELDS = "id label subject fromName body format usesCampaignContent template { id }"
CAMPAIGN_FIELDS = f"""
  id status statusReason
  variants {{ {VARIANT_FIELDS} }}
  abTest {{ testShare metric waitSeconds phase testSentAt decideAt decidedAt decidedBy winner {{ label }} }}
"""
ERRORS = "userErrors { field message code }"
CREATE = f"""
mutation($input: CreateCampaignInput!) {{ createCampaign(input: $input) {{ campaign {{ {CAMPAIGN_FIELDS} }} {ERRORS} }} }}
"""
UPDATE = f"""
mutation($input: UpdateCampaignInput!) {{ updateCampaign(input: $input) {{ campaign {{ {CAMPAIGN_FIELDS} }} {ERRORS} }} }}
"""
START = f"mutation($id: ID!) {{ startCampaign(input: {{id: $id}}) {{ campaign {{ {CAMPAIGN_FIELDS} }} {ERRORS} }} }}"
PICK = f"""
mutation($c: ID!, $v: ID!) {{
  pickWinner(input: {{campaignId: $c, variantId: $v}}) {{ campaign {{ {CAMPAIGN_FIELDS} }} {ERRORS} }}
}}
"""
VARIANT_STATS = "variant { label subject } sent delivered uniqueOpens uniqueClicks openRate clickRate rate"
STATS = f"""
  sent uniqueOpens
  variants {{ {VARIANT_STATS} }}
  winner {{ variant {{ label }} }}
  abTest {{
    metric phase perDelivered decidedAt decidedBy lift significant pValue zScore leader {{ variant {{ label }} rate }}
  }}
"""
STATS_QUERY = f"query($id: ID!) {{ node(id: $id) {{ ... on Campaign {{ stats {{ {STATS} }} }} }} }}"

AB_TEST = {"testShare": 0.2, "metric": "OPENS", "waitSeconds": 3600}


def campaign_input(list_ids: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "Spring",
        "subject": "Spring news for {{ subscriber.name }}",
        "fromEmail": "news@example.com",
        "fromName": "News",
        "listIds": list_ids,
        "body": "<p>Hello {{ subscriber.name }}</p>",
        "format": "HTML",
        **extra,
    }


def two_variants() -> list[dict[str, Any]]:
    return [{}, {"subject": "Only today: {{ subscriber.name }}", "fromName": "The team"}]


async def create(gql: GQL, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"input": payload}, **kw))["createCampaign"]
    return out


async def audience_list(db: Database, n: int = 20) -> str:
    list_id, _ = await seed_audience(db, n)
    return to_global_id("MailingList", list_id)


async def batches(db: Database) -> list[int]:
    async with db.session() as s:
        return list((await s.execute(select(CampaignBatch.id).order_by(CampaignBatch.id))).scalars())


def pk(global_id: str) -> int:
    parsed = parse_global_id(global_id)
    assert parsed is not None
    return parsed[1]


async def test_a_campaign_with_an_ab_test(gql: GQL, db: Database) -> None:
    list_id = await audience_list(db)
    template = await make_template(db, "Bold")
    variants = [
        {},
        {"subject": "Only today: {{ subscriber.name }}", "fromName": "The team"},
        {
            "body": "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column></mj-section></mj-body></mjml>",
            "format": "MJML",
        },
        {"templateId": template},
    ]
    out = await create(gql, campaign_input([list_id], variants=variants, abTest=AB_TEST))
    assert out["userErrors"] == []
    campaign = out["campaign"]
    got = [
        (v["label"], v["subject"], v["fromName"], v["format"], v["usesCampaignContent"], v["template"])
        for v in campaign["variants"]
    ]
    assert got == [
        ("A", "Spring news for {{ subscriber.name }}", "News", None, True, None),
        ("B", "Only today: {{ subscriber.name }}", "The team", None, True, None),
        ("C", "Spring news for {{ subscriber.name }}", "News", "MJML", False, None),
        ("D", "Spring news for {{ subscriber.name }}", "News", None, False, {"id": template}),
    ]
    assert campaign["abTest"] == {
        "testShare": 0.2,
        "metric": "OPENS",
        "waitSeconds": 3600,
        "phase": "PLANNED",
        "testSentAt": None,
        "decideAt": None,
        "decidedAt": None,
        "decidedBy": None,
        "winner": None,
    }
    # Once started it says it sends the test share first.
    started = data(await gql(START, {"id": campaign["id"]}))["startCampaign"]
    assert started["userErrors"] == []
    assert started["campaign"]["status"] == "RUNNING"
    assert started["campaign"]["statusReason"].startswith("A/B test: sending the test to 20% of the audience")
    assert started["campaign"]["abTest"]["phase"] == "TESTING"
    # A template a variant uses is in use.
    deleted = data(
        await gql(
            "mutation($id: ID!) { deleteTemplate(input: {id: $id}) { userErrors { code } } }",
            {"id": template},
        )
    )
    assert deleted["deleteTemplate"]["userErrors"] == [{"code": "IN_USE"}]


BAD_INPUTS = [
    ({"variants": [{}], "abTest": AB_TEST}, [("variants", "VARIANT_COUNT")]),
    (
        {"variants": [{"subject": f"S{i}"} for i in range(6)], "abTest": AB_TEST},
        [("variants", "VARIANT_COUNT")],
    ),
    (
        {"variants": two_variants(), "abTest": {**AB_TEST, "testShare": 0}},
        [("abTest.testShare", "OUT_OF_RANGE")],
    ),
    (
        {"variants": two_variants(), "abTest": {**AB_TEST, "testShare": 1.5}},
        [("abTest.testShare", "OUT_OF_RANGE")],
    ),
    (
        {"variants": two_variants(), "abTest": {**AB_TEST, "waitSeconds": 5}},
        [("abTest.waitSeconds", "OUT_OF_RANGE")],
    ),
    (
        {"variants": two_variants(), "abTest": {**AB_TEST, "waitSeconds": 10**8}},
        [("abTest.waitSeconds", "OUT_OF_RANGE")],
    ),
    ({"variants": two_variants()}, [("abTest", "REQUIRED")]),
    ({"abTest": AB_TEST}, [("variants", "REQUIRED")]),
    ({"variants": [], "abTest": AB_TEST}, [("abTest", "INVALID_INPUT")]),
    ({"variants": [{}, {"fromName": "News"}], "abTest": AB_TEST}, [("variants[1]", "DUPLICATE_VARIANT")]),
    (
        {"variants": [{}, {"body": "<p>{% if %}</p>", "format": "HTML"}], "abTest": AB_TEST},
        [("variants[1].body", "TEMPLATE_SYNTAX")],
    ),
    (
        {"variants": [{"subject": "Hi {{ oops("}, {}], "abTest": AB_TEST},
        [("variants[0].subject", "TEMPLATE_SYNTAX")],
    ),
    (
        {"variants": [{"subject": "two\nlines"}, {}], "abTest": AB_TEST},
        [("variants[0].subject", "INVALID_INPUT")],
    ),
    ({"variants": [{"subject": "  "}, {}], "abTest": AB_TEST}, [("variants[0].subject", "REQUIRED")]),
    ({"variants": [{}, {"body": "<p>x</p>"}], "abTest": AB_TEST}, [("variants[1].format", "REQUIRED")]),
    ({"variants": [{}, {"format": "HTML"}], "abTest": AB_TEST}, [("variants[1].format", "INVALID_INPUT")]),
    (
        {"variants": [{}, {"templateId": to_global_id("Template", 10**9)}], "abTest": AB_TEST},
        [("variants[1].templateId", "TEMPLATE_NOT_FOUND")],
    ),
    (
        {"variants": [{}, {"templateId": "nope"}], "abTest": AB_TEST},
        [("variants[1].templateId", "INVALID_ID")],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_INPUTS)
async def test_bad_ab_test_input_is_a_user_error(
    gql: GQL, db: Database, extra: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    list_id = await audience_list(db, 1)
    out = await create(gql, campaign_input([list_id], **extra))
    assert out["campaign"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == expected


async def test_a_variant_template_must_be_a_campaign_template(gql: GQL, db: Database) -> None:
    list_id = await audience_list(db, 1)
    receipt = await make_template(db, "Receipt", TemplateKind.TRANSACTIONAL)
    out = await create(gql, campaign_input([list_id], variants=[{}, {"templateId": receipt}], abTest=AB_TEST))
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [
        ("variants[1].templateId", "INVALID_INPUT")
    ]


async def test_the_test_is_edited_until_the_campaign_starts(gql: GQL, db: Database) -> None:
    list_id = await audience_list(db, 5)
    plain = (await create(gql, campaign_input([list_id])))["campaign"]
    assert (plain["variants"], plain["abTest"]) == ([], None)
    cid = plain["id"]

    async def update_with(**fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = data(await gql(UPDATE, {"input": {"id": cid, **fields}}))["updateCampaign"]
        return out

    assert [e["code"] for e in (await update_with(abTest=AB_TEST))["userErrors"]] == ["REQUIRED"]
    added = await update_with(variants=two_variants(), abTest=AB_TEST)
    assert added["userErrors"] == [] and [v["label"] for v in added["campaign"]["variants"]] == ["A", "B"]
    # The settings alone; then the variants alone (the settings stay).
    changed = await update_with(abTest={"testShare": 0.5, "metric": "CLICKS", "waitSeconds": 600})
    assert changed["campaign"]["abTest"]["metric"] == "CLICKS"
    three = await update_with(variants=[*two_variants(), {"subject": "Third"}])
    assert [v["label"] for v in three["campaign"]["variants"]] == ["A", "B", "C"]
    assert three["campaign"]["abTest"]["testShare"] == 0.5
    # The campaign's own subject becoming C's makes A (which keeps it) and C alike: refused.
    alike = await update_with(subject="Third")
    assert [(e["field"], e["code"]) for e in alike["userErrors"]] == [("variants[2]", "DUPLICATE_VARIANT")]
    removed = await update_with(variants=[])
    assert (removed["campaign"]["variants"], removed["campaign"]["abTest"]) == ([], None)

    await update_with(variants=two_variants(), abTest=AB_TEST)
    data(await gql(START, {"id": cid}))
    await gql("mutation($id: ID!) { pauseCampaign(input: {id: $id}) { userErrors { code } } }", {"id": cid})
    late = await update_with(variants=[{}, {"subject": "Too late"}])
    assert [(e["field"], e["code"]) for e in late["userErrors"]] == [("variants", "INVALID_STATE")]
    # Other fields of a paused campaign still change.
    assert (await update_with(name="Renamed"))["userErrors"] == []


async def _started_with_counts(
    gql: GQL, db: Database, counts: list[tuple[int, int, int]], metric: str = "OPENS"
) -> tuple[str, list[str]]:
    """A started campaign with variants A, B, ... whose counters read (sent, delivered, unique opens)."""
    list_id = await audience_list(db, 4)
    variants = [{"subject": f"Variant {i}"} for i in range(len(counts))]
    created = await create(
        gql, campaign_input([list_id], variants=variants, abTest={**AB_TEST, "metric": metric})
    )
    campaign = created["campaign"]
    data(await gql(START, {"id": campaign["id"]}))
    ids = [v["id"] for v in campaign["variants"]]
    async with db.transaction() as s:
        for vid, (sent, delivered, opens) in zip(ids, counts, strict=True):
            await s.execute(
                update(CampaignVariant).where(CampaignVariant.id == pk(vid)).values(sent_count=sent)
            )
            s.add(
                CampaignVariantStats(
                    campaign_id=pk(campaign["id"]),
                    variant_id=pk(vid),
                    delivered=delivered,
                    unique_opens=opens,
                    opens=opens,
                    unique_clicks=opens // 2,
                )
            )
    return campaign["id"], ids


async def test_stats_per_variant_with_the_leaders_lift_and_significance(gql: GQL, db: Database) -> None:
    # 20% of 1,000 against 15% of 1,000 (and a third variant far behind).
    cid, variant_ids = await _started_with_counts(gql, db, [(1000, 0, 150), (1000, 0, 200), (500, 0, 10)])
    stats = data(await gql(STATS_QUERY, {"id": cid}))["node"]["stats"]
    assert [
        (v["variant"]["label"], v["sent"], v["uniqueOpens"], v["openRate"], v["rate"])
        for v in stats["variants"]
    ] == [
        ("A", 1000, 150, 0.15, 0.15),
        ("B", 1000, 200, 0.2, 0.2),
        ("C", 500, 10, 0.02, 0.02),
    ]
    assert stats["variants"][1]["clickRate"] == 0.1
    assert stats["winner"] is None
    ab = stats["abTest"]
    assert (ab["metric"], ab["phase"], ab["perDelivered"], ab["decidedAt"]) == (
        "OPENS",
        "TESTING",
        False,
        None,
    )
    assert ab["leader"] == {"variant": {"label": "B"}, "rate": 0.2}
    # B over A, the runner-up: a lift of 1/3, z ≈ 2.942, p ≈ 0.0033: significant.
    assert (ab["lift"], ab["zScore"], ab["pValue"], ab["significant"]) == (0.333333, 2.942449, 0.003256, True)

    # Picked by hand: A. Its margin over the runner-up (B) is negative, and fixed from now on.
    picked = data(await gql(PICK, {"c": cid, "v": variant_ids[0]}))["pickWinner"]
    assert picked["userErrors"] == []
    assert picked["campaign"]["abTest"]["winner"] == {"label": "A"}
    assert picked["campaign"]["abTest"]["decidedBy"] == "MANUAL"
    assert picked["campaign"]["statusReason"] == (
        "A/B test: variant A was picked; the rest of the audience gets it once the test is sent"
    )
    async with db.transaction() as s:
        await s.execute(
            update(CampaignVariantStats).values(unique_opens=CampaignVariantStats.unique_opens + 100)
        )
    stats = data(await gql(STATS_QUERY, {"id": cid}))["node"]["stats"]
    assert stats["winner"] == {"variant": {"label": "A"}}
    ab = stats["abTest"]
    assert (ab["decidedBy"], ab["lift"], ab["pValue"], ab["significant"]) == ("MANUAL", -0.25, 0.003256, True)
    again = data(await gql(PICK, {"c": cid, "v": variant_ids[1]}))["pickWinner"]
    assert [(e["field"], e["code"]) for e in again["userErrors"]] == [("variantId", "WINNER_ALREADY_CHOSEN")]


async def test_rates_are_per_delivered_recipient_once_deliveries_are_reported(gql: GQL, db: Database) -> None:
    cid, _ = await _started_with_counts(gql, db, [(1000, 800, 110), (1000, 0, 100)])
    stats = data(await gql(STATS_QUERY, {"id": cid}))["node"]["stats"]
    assert stats["abTest"]["perDelivered"] is True
    # B has no delivery reports yet: measured alike, its rate is 0 of 0 delivered.
    assert [v["openRate"] for v in stats["variants"]] == [0.1375, 0.0]
    assert stats["abTest"]["leader"]["variant"]["label"] == "A"
    assert stats["abTest"]["pValue"] is None and stats["abTest"]["significant"] is False


async def test_a_campaign_without_a_test_has_no_variant_stats(gql: GQL, db: Database) -> None:
    list_id = await audience_list(db, 1)
    cid = (await create(gql, campaign_input([list_id])))["campaign"]["id"]
    stats = data(await gql(STATS_QUERY, {"id": cid}))["node"]["stats"]
    assert (stats["variants"], stats["winner"], stats["abTest"]) == ([], None, None)
    refused = data(await gql(PICK, {"c": cid, "v": to_global_id("CampaignVariant", 1)}))["pickWinner"]
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [("campaignId", "NO_AB_TEST")]


async def test_each_delivery_shows_its_variant_and_a_variant_is_a_node(gql: GQL, db: Database) -> None:
    list_id = await audience_list(db, 12)
    campaign = (
        await create(
            gql, campaign_input([list_id], variants=two_variants(), abTest={**AB_TEST, "testShare": 1})
        )
    )["campaign"]
    started = data(await gql(START, {"id": campaign["id"]}))["startCampaign"]
    assert started["userErrors"] == []
    await run_all(make_sender(db, KeepingProvider()), await batches(db))
    query = """query($id: ID!) { node(id: $id) { ... on Campaign {
        deliveries(first: 50) { edges { node { email variant { id label } } } } } } }"""
    edges = data(await gql(query, {"id": campaign["id"]}))["node"]["deliveries"]["edges"]
    assert len(edges) == 12 and {e["node"]["variant"]["label"] for e in edges} == {"A", "B"}
    async with db.session() as s:
        recorded = dict((await s.execute(select(Delivery.email, Delivery.variant_id))).all())
    assert {e["node"]["email"]: pk(e["node"]["variant"]["id"]) for e in edges} == recorded
    variant = campaign["variants"][1]
    node = data(
        await gql(
            "query($id: ID!) { node(id: $id) { ... on CampaignVariant { label subject } } }",
            {"id": variant["id"]},
        )
    )
    assert node["node"] == {"label": "B", "subject": "Only today: {{ subscriber.name }}"}


async def test_another_workspaces_campaign_or_variant_answers_like_a_missing_one(
    gql: GQL, db: Database
) -> None:
    list_id = await audience_list(db, 3)
    mine = (await create(gql, campaign_input([list_id], variants=two_variants(), abTest=AB_TEST)))["campaign"]
    data(await gql(START, {"id": mine["id"]}))
    other = await make_workspace(db, "other")
    with workspace_scope(other):
        their_key = await make_key(db, Role.ADMIN, "theirs")
        their_list, _ = await seed_audience(db, 3)
    theirs = (
        await create(
            gql,
            campaign_input(
                [to_global_id("MailingList", their_list)], variants=two_variants(), abTest=AB_TEST
            ),
            key=their_key,
        )
    )["campaign"]
    data(await gql(START, {"id": theirs["id"]}, key=their_key))

    async def pick(campaign: str, variant: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = data(await gql(PICK, {"c": campaign, "v": variant}, key=their_key))[
            "pickWinner"
        ]["userErrors"]
        return out

    missing_campaign = to_global_id("Campaign", 10**9)
    missing_variant = to_global_id("CampaignVariant", 10**9)
    # Their key naming my campaign, or my variant for their campaign: exactly as if the id did not exist.
    assert await pick(mine["id"], mine["variants"][0]["id"]) == await pick(
        missing_campaign, mine["variants"][0]["id"]
    )
    assert await pick(mine["id"], mine["variants"][0]["id"]) == [
        {"field": "campaignId", "message": "Campaign not found", "code": "CAMPAIGN_NOT_FOUND"}
    ]
    assert await pick(theirs["id"], mine["variants"][0]["id"]) == await pick(theirs["id"], missing_variant)
    assert await pick(theirs["id"], missing_variant) == [
        {"field": "variantId", "message": "Variant not found", "code": "VARIANT_NOT_FOUND"}
    ]
    # Nor can they read my variants or my test's stats.
    node = "query($id: ID!) { node(id: $id) { id } }"
    assert data(await gql(node, {"id": mine["variants"][0]["id"]}, key=their_key))["node"] is None
    assert data(await gql(STATS_QUERY, {"id": mine["id"]}, key=their_key))["node"] is None
    # My test is untouched, and theirs is theirs to decide.
    assert (await _winner(gql, mine["id"])) is None
    done = data(await gql(PICK, {"c": theirs["id"], "v": theirs["variants"][1]["id"]}, key=their_key))[
        "pickWinner"
    ]
    assert done["userErrors"] == [] and done["campaign"]["abTest"]["winner"] == {"label": "B"}


async def _winner(gql: GQL, campaign: str, **kw: Any) -> Any:
    query = "query($id: ID!) { node(id: $id) { ... on Campaign { abTest { winner { label } } } } }"
    return data(await gql(query, {"id": campaign}, **kw))["node"]["abTest"]["winner"]


async def test_variant_stats_and_the_winner_stream_live(server: str, db: Database, admin_key: str) -> None:  # noqa: F811
    list_id, _ = await seed_audience(db, 10)
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:

        async def gql(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            resp = await http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            return data(resp.json())

        payload = campaign_input(
            [to_global_id("MailingList", list_id)],
            variants=two_variants(),
            abTest={**AB_TEST, "testShare": 1},
        )
        campaign = (await gql(CREATE, {"input": payload}))["createCampaign"]["campaign"]
        await gql(START, {"id": campaign["id"]})
        await run_all(make_sender(db, KeepingProvider()), await batches(db))
        async with db.session() as s:
            rows = (await s.execute(select(Delivery.id, Delivery.email, Delivery.variant_id))).all()
        b = pk(campaign["variants"][1]["id"])
        opened = [(d, email) for d, email, v in rows if v == b]

        subscription = f'subscription {{ campaignStats(id: "{campaign["id"]}") {{ uniqueOpens variants {{ variant {{ label }} sent uniqueOpens }} winner {{ variant {{ label }} }} abTest {{ phase }} }} }}'
        async with connect(f"ws://{server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {admin_key}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": subscription}}))
            (first,) = await next_stats(ws, lambda s: True)
            assert [v["uniqueOpens"] for v in first["variants"]] == [0, 0]
            assert sum(v["sent"] for v in first["variants"]) == 10
            assert first["abTest"]["phase"] == "WAITING"

            resp = await http.post(
                "/webhooks/sendgrid", content=sendgrid([("open", email, d) for d, email in opened])
            )
            assert resp.status_code == 200
            updates = await next_stats(ws, lambda s: s["uniqueOpens"] == len(opened))
            assert [v["uniqueOpens"] for v in updates[-1]["variants"]] == [0, len(opened)]

            picked = await gql(PICK, {"c": campaign["id"], "v": campaign["variants"][1]["id"]})
            assert picked["pickWinner"]["userErrors"] == []
            decided = await next_stats(ws, lambda s: s["winner"] is not None)
            assert decided[-1]["winner"] == {"variant": {"label": "B"}}
            assert decided[-1]["abTest"]["phase"] == "WINNER_SENT"
            await ws.send(json.dumps({"id": "1", "type": "complete"}))


def readme_examples() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## A/B tests") :]
    return re.findall(r"```graphql\n(.*?)```", section[: section.index("\n## ", 1)], re.S)


async def test_the_readme_examples_run_as_written(gql: GQL, db: Database) -> None:
    create_example, stats_example = readme_examples()
    list_id = await audience_list(db, 3)
    created = data(await gql(create_example, {"listId": list_id}))["createCampaign"]
    assert created["userErrors"] == []
    campaign = created["campaign"]
    assert [(v["label"], v["fromName"]) for v in campaign["variants"]] == [
        ("A", "Example News"),
        ("B", "Example News"),
        ("C", "Ada at Example"),
    ]
    assert campaign["abTest"] == {
        "phase": "PLANNED",
        "testShare": 0.2,
        "metric": "OPENS",
        "waitSeconds": 14400,
    }
    stats = data(await gql(stats_example, {"id": campaign["id"]}))["node"]["stats"]
    assert [v["variant"]["label"] for v in stats["variants"]] == ["A", "B", "C"]
    assert stats["abTest"]["phase"] == "PLANNED" and stats["winner"] is None
