"""Segment filters over the API, on real rows: every operator, groups, list membership, engagement windows,
malformed filters, and the subscribers query taking a filter (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.schema.relay import to_global_id
from tests.support.graphql import GQL, data
from tests.support.segments import ATTRIBUTES, People, attr, seed_people

PREVIEW = """
query($f: SubscriberFilterInput!) {
  segmentPreview(filter: $f) { count sample { id email } userErrors { field message code } }
}
"""


@pytest.fixture
async def people(db: Database) -> People:
    """Six subscribers with varied attributes, two lists, two campaigns, events and deliveries."""
    return await seed_people(db)


async def preview(gql: GQL, f: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(PREVIEW, {"f": f}))["segmentPreview"]
    return out


async def matches(gql: GQL, f: dict[str, Any]) -> set[str]:
    out = await preview(gql, f)
    assert out["userErrors"] == [], out["userErrors"]
    names = {s["email"].split("@")[0] for s in out["sample"]}
    assert out["count"] == len(names)
    return names


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
                "INSERT INTO subscribers (workspace_id, email, name, attributes, status, created_at, updated_at) "
                f"VALUES (1, 'raw@example.com', '', {cast}, 'ENABLED', :now, :now)"
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
