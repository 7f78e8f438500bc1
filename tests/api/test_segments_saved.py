"""Saved segments over the API, on real rows, and campaigns targeting segments, through to the send pipeline
(SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery
from emailkit.db.tables.sending import CampaignSegment as CampaignSegmentRow
from emailkit.domain.audience import targeting as audience
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.errors import DomainError
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.outbox import OutboxProvider
from emailkit.schema.relay import parse_global_id, to_global_id
from tests.support.graphql import GQL, data
from tests.support.segments import People, attr, seed_people

SEGMENT_FIELDS = "id name description filter subscriberCount createdAt updatedAt"
CREATE_SEGMENT = f"""
mutation($i: CreateSegmentInput!) {{
  createSegment(input: $i) {{ segment {{ {SEGMENT_FIELDS} }} userErrors {{ field message code }} }}
}}
"""
UPDATE_SEGMENT = f"""
mutation($i: UpdateSegmentInput!) {{
  updateSegment(input: $i) {{ segment {{ {SEGMENT_FIELDS} }} userErrors {{ field message code }} }}
}}
"""
DELETE_SEGMENT = """
mutation($i: DeleteSegmentInput!) { deleteSegment(input: $i) { deletedId userErrors { field code } } }
"""
CREATE_CAMPAIGN = """
mutation($i: CreateCampaignInput!) {
  createCampaign(input: $i) { campaign { id segments { id name } lists { id } } userErrors { field code } }
}
"""


@pytest.fixture
async def people(db: Database) -> People:
    """Six subscribers with varied attributes, two lists, two campaigns, events and deliveries."""
    return await seed_people(db)


async def create_segment(gql: GQL, name: str, f: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE_SEGMENT, {"i": {"name": name, "filter": f, **extra}}))[
        "createSegment"
    ]
    return out


async def test_segment_crud(gql: GQL, db: Database, people: People) -> None:
    x = people.list_gid("x")
    f = {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}, "not": {"list": {"listId": x}}}
    created = await create_segment(gql, "  Berliners  ", f, description="Not on X")
    assert created["userErrors"] == []
    seg = created["segment"]
    assert (seg["name"], seg["description"], seg["subscriberCount"]) == ("Berliners", "Not on X", 1)
    # The filter comes back in input form, global IDs included, so it can be edited and sent again.
    assert seg["filter"] == f

    # Dynamic: a new Berliner counts at once.
    async with db.transaction() as s:
        s.add(Subscriber(email="gus@example.com", attributes={"city": "Berlin"}))
    got = data(
        await gql(
            "query($id: ID!) { segment(id: $id) { name subscriberCount } node(id: $id) { id ... on Segment { name } } }",
            {"id": seg["id"]},
        )
    )
    assert got == {
        "segment": {"name": "Berliners", "subscriberCount": 2},
        "node": {"id": seg["id"], "name": "Berliners"},
    }

    updated = data(
        await gql(UPDATE_SEGMENT, {"i": {"id": seg["id"], "filter": attr("city", "EQ", "Paris")}})
    )["updateSegment"]
    assert updated["userErrors"] == []
    assert updated["segment"]["name"] == "Berliners"
    assert updated["segment"]["filter"] == attr("city", "EQ", "Paris")
    assert updated["segment"]["subscriberCount"] == 1

    bad = data(await gql(UPDATE_SEGMENT, {"i": {"id": seg["id"], "name": " ", "filter": attr("x", "IN", 1)}}))
    assert sorted((e["field"], e["code"]) for e in bad["updateSegment"]["userErrors"]) == [
        ("filter.attribute.value", "INVALID_FILTER"),
        ("name", "REQUIRED"),
    ]

    await create_segment(gql, "Second", {})
    listed = data(await gql("{ segments(first: 10) { totalCount edges { node { name subscriberCount } } } }"))
    assert listed["segments"]["totalCount"] == 2
    assert [e["node"] for e in listed["segments"]["edges"]] == [
        {"name": "Berliners", "subscriberCount": 1},
        {"name": "Second", "subscriberCount": 7},
    ]

    deleted = data(await gql(DELETE_SEGMENT, {"i": {"id": seg["id"]}}))["deleteSegment"]
    assert deleted == {"deletedId": seg["id"], "userErrors": []}
    again = data(await gql(DELETE_SEGMENT, {"i": {"id": seg["id"]}}))["deleteSegment"]
    assert again == {"deletedId": None, "userErrors": [{"field": "id", "code": "SEGMENT_NOT_FOUND"}]}
    assert (
        data(await gql("query($id: ID!) { segment(id: $id) { id } }", {"id": seg["id"]}))["segment"] is None
    )


async def test_create_segment_reports_filter_errors_with_paths(gql: GQL, people: People) -> None:
    out = await create_segment(gql, "", {"and": [{"list": {"listId": to_global_id("MailingList", 31337)}}]})
    assert out["segment"] is None
    assert sorted((e["field"], e["code"]) for e in out["userErrors"]) == [
        ("filter.and[0].list.listId", "LIST_NOT_FOUND"),
        ("name", "REQUIRED"),
    ]


def campaign_input(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Spring",
        "subject": "Hi",
        "fromEmail": "news@example.com",
        "body": "<p>x</p>",
        "format": "HTML",
        **extra,
    }


def pk(global_id: str) -> int:
    parsed = parse_global_id(global_id)
    assert parsed is not None
    return parsed[1]


async def test_segment_in_use_by_an_unfinished_campaign_cannot_be_deleted(
    gql: GQL, db: Database, people: People
) -> None:
    seg = (await create_segment(gql, "Berliners", attr("city", "EQ", "Berlin")))["segment"]
    out = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input(segmentIds=[seg["id"], seg["id"]])}))[
        "createCampaign"
    ]
    assert out["userErrors"] == []
    assert out["campaign"]["segments"] == [{"id": seg["id"], "name": "Berliners"}]
    assert out["campaign"]["lists"] == []

    refused = data(await gql(DELETE_SEGMENT, {"i": {"id": seg["id"]}}))["deleteSegment"]
    assert refused == {"deletedId": None, "userErrors": [{"field": "id", "code": "IN_USE"}]}

    async with db.transaction() as s:
        await lifecycle.cancel_campaign(s, pk(out["campaign"]["id"]))
    assert data(await gql(DELETE_SEGMENT, {"i": {"id": seg["id"]}}))["deleteSegment"]["userErrors"] == []


async def test_campaign_segment_ids_are_checked(gql: GQL, people: People) -> None:
    missing = to_global_id("Segment", 777)
    out = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input(segmentIds=[missing])}))["createCampaign"]
    assert out == {"campaign": None, "userErrors": [{"field": "segmentIds", "code": "SEGMENT_NOT_FOUND"}]}
    out = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input(segmentIds=["nope"])}))["createCampaign"]
    assert out == {"campaign": None, "userErrors": [{"field": "segmentIds", "code": "INVALID_ID"}]}


async def recipients(db: Database, campaign_id: int) -> dict[str, str | None]:
    """email -> skip reason (None: will be sent), as the send pipeline would materialise them."""
    async with db.session() as s:
        target = await audience.load_target(s, campaign_id)
        rows = (await s.execute(audience.recipients_stmt(target, 0, 10**9))).all()
    return {
        email: audience.skip_reason(status, int(sendable), int(unconfirmed))
        for _, email, status, sendable, unconfirmed, _via in rows
    }


async def test_campaign_targeting_lists_and_a_segment(gql: GQL, db: Database, people: People) -> None:
    seg = (await create_segment(gql, "Berliners", attr("city", "EQ", "Berlin")))["segment"]
    created = data(
        await gql(
            CREATE_CAMPAIGN,
            {"i": campaign_input(listIds=[people.list_gid("newsletter")], segmentIds=[seg["id"]])},
        )
    )["createCampaign"]
    campaign_id = pk(created["campaign"]["id"])

    async with db.transaction() as s:
        row, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=2)
    # Newsletter: ana, bob (unsubscribed), cem (blocklisted); Berliners: ana, eve.
    assert row.status is CampaignStatus.RUNNING
    assert row.recipients_count == 4
    assert len(batch_ids) == 2
    expected = {
        "ana@example.com": None,
        "bob@example.com": "unsubscribed",
        "cem@example.com": "blocklisted",
        # A segment match is sent through any list it is subscribed to (eve: list X).
        "eve@example.com": None,
    }
    assert await recipients(db, campaign_id) == expected

    # Editing the segment later does not move a started campaign's audience.
    changed = data(await gql(UPDATE_SEGMENT, {"i": {"id": seg["id"], "filter": attr("city", "EQ", "Paris")}}))
    assert changed["updateSegment"]["userErrors"] == []
    assert await recipients(db, campaign_id) == expected

    async with db.transaction() as s:
        await lifecycle.pause_campaign(s, campaign_id)
    late = data(
        await gql(
            "mutation($i: UpdateCampaignInput!) { updateCampaign(input: $i) { userErrors { field code } } }",
            {"i": {"id": created["campaign"]["id"], "segmentIds": []}},
        )
    )["updateCampaign"]
    assert late["userErrors"] == [{"field": "segmentIds", "code": "INVALID_STATE"}]


async def test_campaign_targeting_only_a_segment(gql: GQL, db: Database, people: People) -> None:
    f = {"engagement": {"event": "OPENED", "withinDays": 30}}
    seg = (await create_segment(gql, "Recent openers", f))["segment"]
    created = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input(segmentIds=[seg["id"]])}))[
        "createCampaign"
    ]
    campaign_id = pk(created["campaign"]["id"])
    async with db.transaction() as s:
        row, batch_ids = await lifecycle.start_campaign(s, campaign_id)
    assert (row.status, row.recipients_count, len(batch_ids)) == (CampaignStatus.RUNNING, 2, 1)

    # Opens after the start do not change who the running send reaches; ana and eve were pinned at start.
    async with db.transaction() as s:
        await s.execute(
            insert(Event).values(
                subscriber_id=people.ids["dan"],
                campaign_id=campaign_id,
                type=EventType.OPEN,
                provider="test",
                occurred_at=datetime.now(UTC) + timedelta(seconds=5),
                recorded_at=datetime.now(UTC),
            )
        )
        definition = (
            await s.execute(
                select(CampaignSegmentRow.definition).where(CampaignSegmentRow.campaign_id == campaign_id)
            )
        ).scalar_one()
    assert definition == f
    # eve has a CONFIRMED subscription (list X); ana only a Newsletter one - both sendable.
    assert await recipients(db, campaign_id) == {"ana@example.com": None, "eve@example.com": None}


async def test_campaign_without_lists_or_segments_cannot_start(gql: GQL, db: Database) -> None:
    created = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input()}))["createCampaign"]
    async with db.transaction() as s:
        with pytest.raises(DomainError) as caught:
            await lifecycle.start_campaign(s, pk(created["campaign"]["id"]))
    assert [e.code.value for e in caught.value.errors] == ["INVALID_STATE"]


async def test_segment_with_no_matches_finishes_at_once(gql: GQL, db: Database, people: People) -> None:
    seg = (await create_segment(gql, "Nobody", attr("city", "EQ", "Atlantis")))["segment"]
    created = data(await gql(CREATE_CAMPAIGN, {"i": campaign_input(segmentIds=[seg["id"]])}))[
        "createCampaign"
    ]
    async with db.transaction() as s:
        row, batch_ids = await lifecycle.start_campaign(s, pk(created["campaign"]["id"]))
    assert (row.status, row.recipients_count, batch_ids) == (CampaignStatus.FINISHED, 0, [])


async def test_the_send_pipeline_mails_segment_matches(
    gql: GQL, db: Database, people: People, tmp_path: Path
) -> None:
    seg = (await create_segment(gql, "Berliners", attr("city", "EQ", "Berlin")))["segment"]
    created = data(
        await gql(
            CREATE_CAMPAIGN,
            {"i": campaign_input(listIds=[people.list_gid("newsletter")], segmentIds=[seg["id"]])},
        )
    )["createCampaign"]
    campaign_id = pk(created["campaign"]["id"])
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=1)
    # Edited after the start: the send still uses the definition recorded then.
    await gql(UPDATE_SEGMENT, {"i": {"id": seg["id"], "filter": attr("city", "EQ", "Paris")}})

    sender = CampaignSender(
        db, OutboxProvider(tmp_path), "outbox", TrackingUrls("https://m.example.com", TokenSigner("s" * 32))
    )
    for batch_id in batch_ids:
        assert (await sender.run_batch(batch_id)).done
    async with db.session() as s:
        rows = (
            await s.execute(
                select(Delivery.email, Delivery.status, Delivery.skip_reason).where(
                    Delivery.campaign_id == campaign_id
                )
            )
        ).all()
        campaign = await s.get(Campaign, campaign_id)
    assert sorted((e, st.value, r) for e, st, r in rows) == [
        ("ana@example.com", "SENT", None),
        ("bob@example.com", "SKIPPED", "unsubscribed"),
        ("cem@example.com", "SKIPPED", "blocklisted"),
        ("eve@example.com", "SENT", None),
    ]
    assert campaign is not None and campaign.status is CampaignStatus.FINISHED
    assert len(list(tmp_path.glob("*.eml"))) == 2
