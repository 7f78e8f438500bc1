"""Segments over the API, on real rows: every operator, groups, list membership, engagement windows, saved
segments, and campaigns targeting segments (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
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

NOW = datetime.now(UTC)

PREVIEW = """
query($f: SubscriberFilterInput!) {
  segmentPreview(filter: $f) { count sample { id email } userErrors { field message code } }
}
"""

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


@dataclass
class People:
    ids: dict[str, int]
    lists: dict[str, int]
    campaigns: dict[str, int]

    def list_gid(self, name: str) -> str:
        return to_global_id("MailingList", self.lists[name])

    def campaign_gid(self, name: str) -> str:
        return to_global_id("Campaign", self.campaigns[name])


ATTRIBUTES: dict[str, dict[str, Any]] = {
    "ana": {
        "city": "Berlin",
        "age": 30,
        "tags": ["vip", "beta"],
        "address": {"city": "Berlin", "zip": "10115"},
        "newsletter": True,
        "score": 4.5,
    },
    "bob": {
        "city": "berlin",
        "age": "30",
        "tags": "VIP customer",
        "address": {"city": "Paris"},
        "newsletter": False,
    },
    "cem": {"city": "Paris", "age": 45, "tags": [1, 2, 3], "nick": None},
    "dan": {},
    "eve": {"city": "Berlin", "age": 29.5, "signup": "2024-03-01", "tags": ["VIP"], "flags": [True]},
    "fay": {"city": "München", "Straße": "Hauptstraße 1", "address": {"city": ["Berlin"]}},
}


@pytest.fixture
async def people(db: Database) -> People:
    """Six subscribers with varied attributes, two lists, two campaigns, events and deliveries."""
    async with db.transaction() as s:
        ids: dict[str, int] = {}
        for n, (name, attrs) in enumerate(ATTRIBUTES.items()):
            row = Subscriber(
                email=f"{name}@example.com",
                name=name.capitalize() + " Example",
                attributes=attrs,
                status=SubscriberStatus.BLOCKLISTED if name == "cem" else SubscriberStatus.ENABLED,
                created_at=datetime(2024, 1 + n, 1, tzinfo=UTC),
            )
            s.add(row)
            await s.flush()
            ids[name] = row.id
        newsletter = MailingList(name="Newsletter", optin=OptIn.SINGLE)
        vip = MailingList(name="X", optin=OptIn.SINGLE)
        s.add_all([newsletter, vip])
        await s.flush()
        s.add_all(
            [
                Subscription(
                    subscriber_id=ids["ana"], list_id=newsletter.id, status=SubscriptionStatus.CONFIRMED
                ),
                Subscription(
                    subscriber_id=ids["bob"], list_id=newsletter.id, status=SubscriptionStatus.UNSUBSCRIBED
                ),
                Subscription(
                    subscriber_id=ids["cem"], list_id=newsletter.id, status=SubscriptionStatus.UNCONFIRMED
                ),
                Subscription(subscriber_id=ids["eve"], list_id=vip.id, status=SubscriptionStatus.CONFIRMED),
            ]
        )
        campaigns = {}
        for name in ("c1", "c2"):
            c = Campaign(
                name=name, subject="s", from_email="a@example.com", body="<p>x</p>", format=ContentFormat.HTML
            )
            s.add(c)
            await s.flush()
            campaigns[name] = c.id

        def event(who: str, kind: EventType, campaign: str, days_ago: float) -> dict[str, Any]:
            return {
                "subscriber_id": ids[who],
                "campaign_id": campaigns[campaign],
                "type": kind,
                "provider": "test",
                "email": f"{who}@example.com",
                "occurred_at": NOW - timedelta(days=days_ago),
                "recorded_at": NOW,
            }

        await s.execute(
            insert(Event),
            [
                event("ana", EventType.OPEN, "c1", 5),
                event("bob", EventType.OPEN, "c1", 40),
                event("eve", EventType.OPEN, "c1", 2),
                event("cem", EventType.CLICK, "c2", 1),
                event("fay", EventType.DELIVERED, "c1", 1),
            ],
        )
        for who, status, days_ago in (("dan", DeliveryStatus.SENT, 10), ("eve", DeliveryStatus.FAILED, 10)):
            s.add(
                Delivery(
                    campaign_id=campaigns["c1"],
                    subscriber_id=ids[who],
                    email=f"{who}@example.com",
                    status=status,
                    sent_at=NOW - timedelta(days=days_ago) if status is DeliveryStatus.SENT else None,
                )
            )
    return People(ids=ids, lists={"newsletter": newsletter.id, "x": vip.id}, campaigns=campaigns)


async def preview(gql: GQL, f: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(PREVIEW, {"f": f}))["segmentPreview"]
    return out


async def matches(gql: GQL, f: dict[str, Any]) -> set[str]:
    out = await preview(gql, f)
    assert out["userErrors"] == [], out["userErrors"]
    names = {s["email"].split("@")[0] for s in out["sample"]}
    assert out["count"] == len(names)
    return names


def attr(path: str, op: str, value: Any = ..., **extra: Any) -> dict[str, Any]:
    cond: dict[str, Any] = {"path": path, "op": op}
    if value is not ...:
        cond["value"] = value
    return {"attribute": cond, **extra}


ATTRIBUTE_CASES: list[tuple[dict[str, Any], set[str]]] = [
    # EQ is typed and exact: 30 is not "30", "Berlin" is not "berlin", a string is not an array holding it.
    (attr("city", "EQ", "Berlin"), {"ana", "eve"}),
    (attr("age", "EQ", 30), {"ana"}),
    (attr("age", "EQ", "30"), {"bob"}),
    (attr("score", "EQ", 4.5), {"ana"}),
    (attr("newsletter", "EQ", True), {"ana"}),
    (attr("newsletter", "EQ", False), {"bob"}),
    (attr("nick", "EQ", None), {"cem"}),
    (attr("tags", "EQ", "vip"), set()),
    (attr("address.city", "EQ", "Berlin"), {"ana"}),
    (attr("city", "EQ", "München"), {"fay"}),
    (attr("Straße", "EQ", "Hauptstraße 1"), {"fay"}),
    # NE needs the attribute to be there.
    (attr("city", "NE", "Berlin"), {"bob", "cem", "fay"}),
    (attr("age", "NE", 30), {"bob", "cem", "eve"}),
    # Numbers compare with numbers only ("30" is a string and is left out).
    (attr("age", "GT", 29), {"ana", "cem", "eve"}),
    (attr("age", "GTE", 30), {"ana", "cem"}),
    (attr("age", "LT", 30), {"eve"}),
    (attr("age", "LTE", 30), {"ana", "eve"}),
    (attr("age", "GT", 29.75), {"ana", "cem"}),
    # Strings compare with strings, in byte order on both backends ("berlin" sorts after "C").
    (attr("signup", "GTE", "2024-03-01"), {"eve"}),
    (attr("signup", "LT", "2024-03-01"), set()),
    (attr("city", "LT", "C"), {"ana", "eve"}),
    (attr("age", "LT", "4"), {"bob"}),
    # CONTAINS: case-insensitive substring of strings, exact element of arrays.
    (attr("city", "CONTAINS", "ERL"), {"ana", "bob", "eve"}),
    (attr("tags", "CONTAINS", "vip"), {"ana", "bob"}),
    (attr("tags", "CONTAINS", "VIP"), {"bob", "eve"}),
    (attr("tags", "CONTAINS", 2), {"cem"}),
    (attr("flags", "CONTAINS", True), {"eve"}),
    (attr("Straße", "CONTAINS", "STRASSE"), set()),
    (attr("Straße", "CONTAINS", "straße"), {"fay"}),
    (attr("city", "CONTAINS", "%"), set()),
    (attr("address.city", "CONTAINS", "Berlin"), {"ana", "fay"}),
    # IN is a typed EQ over several values.
    (attr("city", "IN", ["Paris", "Berlin"]), {"ana", "cem", "eve"}),
    (attr("age", "IN", [30, "45"]), {"ana"}),
    (attr("newsletter", "IN", [True, 1]), {"ana"}),
    # EXISTS counts a JSON null as present.
    (attr("nick", "EXISTS"), {"cem"}),
    (attr("nick", "EXISTS", False), {"ana", "bob", "dan", "eve", "fay"}),
    (attr("address.city", "EXISTS", True), {"ana", "bob", "fay"}),
    (attr("address.zip.code", "EXISTS"), set()),
]


async def test_attribute_operators(gql: GQL, people: People) -> None:
    wrong = []
    for condition, expected in ATTRIBUTE_CASES:
        got = await matches(gql, condition)
        if got != expected:
            wrong.append((condition["attribute"], expected, got))
    assert wrong == []


async def test_keys_stored_without_escapes_are_found(gql: GQL, db: Database) -> None:
    # Written by something other than the ORM: non-ASCII characters kept as they are in the JSON text.
    async with db.transaction() as s:
        cast = ":a" if db.dialect == "sqlite" else "CAST(:a AS JSONB)"
        await s.execute(
            text(
                "INSERT INTO subscribers (email, name, attributes, status, created_at, updated_at) "
                f"VALUES ('raw@example.com', '', {cast}, 'ENABLED', :now, :now)"
            ),
            {"a": '{"Straße": "Ring 1", "Länder": ["AT"]}', "now": datetime.now(UTC).replace(tzinfo=None)},
        )
    assert await matches(gql, attr("Straße", "EQ", "Ring 1")) == {"raw"}
    assert await matches(gql, attr("Länder", "CONTAINS", "AT")) == {"raw"}
    assert await matches(gql, attr("Straße", "EXISTS")) == {"raw"}


async def test_not_includes_missing_attributes(gql: GQL, people: People) -> None:
    assert await matches(gql, {"not": attr("city", "EQ", "Berlin")}) == {"bob", "cem", "dan", "fay"}
    assert await matches(gql, {"not": attr("age", "GT", 29)}) == {"bob", "dan", "fay"}
    assert await matches(gql, {"not": attr("tags", "CONTAINS", "vip")}) == {"cem", "dan", "eve", "fay"}


async def test_text_status_and_date_conditions(gql: GQL, people: People) -> None:
    assert await matches(gql, {"email": {"eq": "ANA@example.COM"}}) == {"ana"}
    assert await matches(gql, {"email": {"startsWith": "E", "endsWith": ".COM"}}) == {"eve"}
    assert await matches(gql, {"name": {"contains": "B EXAMPLE"}}) == {"bob"}
    assert await matches(gql, {"name": {"contains": "_"}}) == set()
    assert await matches(gql, {"status": "BLOCKLISTED"}) == {"cem"}
    # created_at: ana Jan, bob Feb, cem Mar, dan Apr, eve May, fay Jun 2024.
    window = {"after": "2024-02-15T00:00:00+00:00", "before": "2024-05-01T00:00:00Z"}
    assert await matches(gql, {"createdAt": window}) == {"cem", "dan"}
    assert await matches(gql, {"createdAt": {"before": "2024-02-01T00:00:00+00:00"}}) == {"ana"}


async def test_groups(gql: GQL, people: People) -> None:
    either = {"or": [attr("city", "EQ", "Paris"), attr("age", "LT", 30)]}
    assert await matches(gql, either) == {"cem", "eve"}
    # Keys on one node are ANDed with each other and with `and`.
    node = {
        "email": {"contains": "B"},
        "and": [attr("city", "CONTAINS", "berlin")],
        "not": {"status": "BLOCKLISTED"},
    }
    assert await matches(gql, node) == {"bob"}
    nested = {
        "or": [
            {"and": [attr("city", "EQ", "Berlin"), {"not": attr("tags", "CONTAINS", "beta")}]},
            {"name": {"eq": "dan example"}},
        ]
    }
    assert await matches(gql, nested) == {"eve", "dan"}
    assert await matches(gql, {}) == set(ATTRIBUTES)


async def test_list_membership(gql: GQL, people: People) -> None:
    newsletter = people.list_gid("newsletter")
    assert await matches(gql, {"list": {"listId": newsletter}}) == {"ana", "cem"}
    assert await matches(gql, {"list": {"listId": newsletter, "status": "UNSUBSCRIBED"}}) == {"bob"}
    assert await matches(gql, {"list": {"listId": newsletter, "status": "CONFIRMED"}}) == {"ana"}
    assert await matches(gql, {"not": {"list": {"listId": newsletter}}}) == {"bob", "dan", "eve", "fay"}


async def test_engagement_windows(gql: GQL, people: People) -> None:
    c1, c2 = people.campaign_gid("c1"), people.campaign_gid("c2")
    assert await matches(gql, {"engagement": {"event": "OPENED"}}) == {"ana", "bob", "eve"}
    assert await matches(gql, {"engagement": {"event": "OPENED", "withinDays": 30}}) == {"ana", "eve"}
    assert await matches(gql, {"engagement": {"event": "OPENED", "withinDays": 3}}) == {"eve"}
    assert await matches(gql, {"engagement": {"event": "OPENED", "campaignId": c2}}) == set()
    assert await matches(gql, {"engagement": {"event": "CLICKED", "campaignId": c2}}) == {"cem"}
    assert await matches(gql, {"engagement": {"event": "CLICKED", "campaignId": c1}}) == set()
    # RECEIVED is a SENT delivery (eve's FAILED one does not count, nor fay's DELIVERED event).
    assert await matches(gql, {"engagement": {"event": "RECEIVED"}}) == {"dan"}
    assert await matches(gql, {"engagement": {"event": "RECEIVED", "campaignId": c1, "withinDays": 11}}) == {
        "dan"
    }
    assert await matches(gql, {"engagement": {"event": "RECEIVED", "withinDays": 9}}) == set()
    assert await matches(gql, {"not": {"engagement": {"event": "OPENED", "withinDays": 30}}}) == {
        "bob",
        "cem",
        "dan",
        "fay",
    }


async def test_berlin_openers_not_on_list_x(gql: GQL, people: People) -> None:
    example = {
        "attribute": {"path": "city", "op": "EQ", "value": "Berlin"},
        "engagement": {"event": "OPENED", "withinDays": 30},
        "not": {"list": {"listId": people.list_gid("x")}},
    }
    out = await preview(gql, example)
    assert out == {
        "count": 1,
        "sample": [{"id": to_global_id("Subscriber", people.ids["ana"]), "email": "ana@example.com"}],
        "userErrors": [],
    }


async def test_sample_is_the_first_ten_by_id(gql: GQL, db: Database) -> None:
    async with db.transaction() as s:
        s.add_all([Subscriber(email=f"p{i:02}@example.com", attributes={"n": i}) for i in range(25)])
    out = await preview(gql, attr("n", "GTE", 3))
    assert out["count"] == 22
    assert [x["email"] for x in out["sample"]] == [f"p{i:02}@example.com" for i in range(3, 13)]


@pytest.mark.parametrize(
    ("f", "errors"),
    [
        (attr("age", "GT", {"a": 1}), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("age", "GT", True), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "IN", "Berlin"), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "IN", []), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "IN", ["a", ["b"]]), [("filter.attribute.value[1]", "INVALID_FILTER")]),
        (attr("city", "EQ"), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "EQ", ["Berlin"]), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "CONTAINS", ""), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("city", "EXISTS", "yes"), [("filter.attribute.value", "INVALID_FILTER")]),
        (attr("a..b", "EQ", 1), [("filter.attribute.path", "INVALID_FILTER")]),
        (attr('a"b', "EQ", 1), [("filter.attribute.path", "INVALID_FILTER")]),
        (attr("", "EQ", 1), [("filter.attribute.path", "INVALID_FILTER")]),
        (
            {"engagement": {"event": "OPENED", "withinDays": 0}},
            [("filter.engagement.withinDays", "INVALID_FILTER")],
        ),
        (
            {"engagement": {"event": "OPENED", "withinDays": -3}},
            [("filter.engagement.withinDays", "INVALID_FILTER")],
        ),
        ({"email": {}}, [("filter.email", "INVALID_FILTER")]),
        ({"or": []}, [("filter.or", "INVALID_FILTER")]),
        (
            {"createdAt": {"before": "2024-01-01T00:00:00Z", "after": "2024-02-01T00:00:00Z"}},
            [("filter.createdAt", "INVALID_FILTER")],
        ),
        ({"list": {"listId": "not-an-id"}}, [("filter.list.listId", "INVALID_ID")]),
        (
            {"and": [attr("city", "EQ", "x"), {"not": attr("age", "LT", [1])}], "or": [{"name": {"eq": ""}}]},
            [
                ("filter.and[1].not.attribute.value", "INVALID_FILTER"),
                ("filter.or[0].name.eq", "INVALID_FILTER"),
            ],
        ),
    ],
)
async def test_malformed_filters_are_user_errors(
    gql: GQL, f: dict[str, Any], errors: list[tuple[str, str]]
) -> None:
    out = await preview(gql, f)
    assert out["count"] is None and out["sample"] == []
    assert sorted((e["field"], e["code"]) for e in out["userErrors"]) == sorted(errors)
    assert all(e["message"] for e in out["userErrors"])


async def test_unknown_references_are_user_errors(gql: GQL, people: People) -> None:
    f = {
        "and": [
            {"list": {"listId": people.list_gid("x")}},
            {"list": {"listId": to_global_id("MailingList", 999_999)}},
            {"engagement": {"event": "CLICKED", "campaignId": to_global_id("Campaign", 999_999)}},
        ]
    }
    out = await preview(gql, f)
    assert sorted((e["field"], e["code"]) for e in out["userErrors"]) == [
        ("filter.and[1].list.listId", "LIST_NOT_FOUND"),
        ("filter.and[2].engagement.campaignId", "CAMPAIGN_NOT_FOUND"),
    ]


async def test_depth_and_size_limits(gql: GQL) -> None:
    deep: dict[str, Any] = attr("a", "EXISTS")
    for _ in range(10):
        deep = {"not": deep}
    out = await preview(gql, deep)
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [
        ("filter" + ".not" * 10, "INVALID_FILTER")
    ]
    ok = deep["not"]
    assert (await preview(gql, ok))["userErrors"] == []

    many = {"or": [attr("n", "EQ", i) for i in range(101)]}
    out = await preview(gql, many)
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("filter", "INVALID_FILTER")]
    assert (await preview(gql, {"or": many["or"][:100]}))["count"] == 0


SUBSCRIBERS = """
query($f: SubscriberFilterInput, $after: String, $search: String) {
  subscribers(filter: $f, first: 2, after: $after, search: $search) {
    totalCount edges { node { email } } pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_subscribers_query_takes_the_filter(gql: GQL, people: People) -> None:
    f = attr("city", "CONTAINS", "e")
    first = data(await gql(SUBSCRIBERS, {"f": f}))["subscribers"]
    assert first["totalCount"] == 4
    assert [e["node"]["email"] for e in first["edges"]] == ["ana@example.com", "bob@example.com"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = data(await gql(SUBSCRIBERS, {"f": f, "after": first["pageInfo"]["endCursor"]}))["subscribers"]
    assert [e["node"]["email"] for e in second["edges"]] == ["eve@example.com", "fay@example.com"]


async def test_subscribers_query_rejects_a_bad_filter(gql: GQL, people: People) -> None:
    body = await gql(SUBSCRIBERS, {"f": attr("age", "GT", {"x": 1})})
    [error] = body["errors"]
    assert error["extensions"]["code"] == "INVALID_FILTER"
    assert error["extensions"]["userErrors"] == [
        {
            "field": "filter.attribute.value",
            "message": "GT compares numbers or strings",
            "code": "INVALID_FILTER",
        }
    ]
    unknown = await gql(SUBSCRIBERS, {"f": {"list": {"listId": to_global_id("MailingList", 424242)}}})
    assert unknown["errors"][0]["extensions"]["code"] == "INVALID_FILTER"
    both = await gql(SUBSCRIBERS, {"f": {}, "search": "ana"})
    assert both["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


# --- saved segments ---------------------------------------------------------------------------------------


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
