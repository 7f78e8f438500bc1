from __future__ import annotations

from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import Suppression
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.feedback import is_suppressed
from emailkit.schema.relay import to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data

ADD = """
mutation($input: AddSuppressionInput!) {
  addSuppression(input: $input) {
    suppression { id email emailHash reason detail source createdAt campaign { id } }
    userErrors { field message code }
  }
}
"""
REMOVE = """
mutation($input: RemoveSuppressionInput!) {
  removeSuppression(input: $input) { suppression { id email } userErrors { field code } }
}
"""
LIST = """
query($first: Int!, $after: String, $search: String) {
  suppressions(first: $first, after: $after, search: $search) {
    edges { cursor node { id email reason } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}
"""


async def add(gql: GQL, email: str, **extra: str) -> dict[str, object]:
    out: dict[str, object] = data(await gql(ADD, {"input": {"email": email, **extra}}))["addSuppression"]
    return out


async def test_add_list_and_remove(gql: GQL, db: Database) -> None:
    created = await add(gql, "  Someone@Example.ORG ", reason="COMPLAINT", detail="called us")
    assert created["userErrors"] == []
    s = created["suppression"]
    assert isinstance(s, dict)
    assert s["email"] == "someone@example.org"
    assert s["emailHash"] == email_hash("someone@example.org")
    assert (s["reason"], s["detail"], s["source"], s["campaign"]) == ("COMPLAINT", "called us", "api", None)
    async with db.session() as session:
        assert await is_suppressed(session, "SOMEONE@example.org")

    node = data(
        await gql("query($id: ID!) { node(id: $id) { ... on Suppression { email } } }", {"id": s["id"]})
    )
    assert node["node"] == {"email": "someone@example.org"}

    removed = data(await gql(REMOVE, {"input": {"email": "someone@EXAMPLE.org"}}))["removeSuppression"]
    assert removed == {"suppression": {"id": s["id"], "email": "someone@example.org"}, "userErrors": []}
    async with db.session() as session:
        assert not await is_suppressed(session, "someone@example.org")
    again = data(await gql(REMOVE, {"input": {"id": s["id"]}}))["removeSuppression"]
    assert again == {"suppression": None, "userErrors": [{"field": "id", "code": "SUPPRESSION_NOT_FOUND"}]}


async def test_user_errors(gql: GQL) -> None:
    bad = await add(gql, "not-an-address")
    assert bad["suppression"] is None
    assert [(e["field"], e["code"]) for e in bad["userErrors"]] == [("email", "INVALID_EMAIL")]  # type: ignore[attr-defined]
    assert (await add(gql, "a@example.org", reason="HARD_BOUNCE"))["userErrors"] == []
    dup = await add(gql, "A@example.org")
    assert dup["userErrors"] == [
        {"field": "email", "message": "This address is already suppressed", "code": "ALREADY_SUPPRESSED"}
    ]
    both = data(
        await gql(REMOVE, {"input": {"id": to_global_id("Suppression", 1), "email": "a@example.org"}})
    )["removeSuppression"]
    assert both["userErrors"] == [{"field": None, "code": "INVALID_INPUT"}]
    neither = data(await gql(REMOVE, {"input": {}}))["removeSuppression"]
    assert neither["userErrors"] == [{"field": None, "code": "INVALID_INPUT"}]
    wrong_id = data(await gql(REMOVE, {"input": {"id": "bm90LWFuLWlk"}}))["removeSuppression"]
    assert wrong_id["userErrors"] == [{"field": "id", "code": "INVALID_ID"}]


async def test_pages_newest_first_and_search(gql: GQL, db: Database) -> None:
    for i in range(5):
        await add(gql, f"user{i}@example.org")
    await add(gql, "other@elsewhere.net")
    first = data(await gql(LIST, {"first": 4}))["suppressions"]
    assert [e["node"]["email"] for e in first["edges"]] == [
        "other@elsewhere.net",
        "user4@example.org",
        "user3@example.org",
        "user2@example.org",
    ]
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["totalCount"] == 6
    rest = data(await gql(LIST, {"first": 4, "after": first["pageInfo"]["endCursor"]}))["suppressions"]
    assert [e["node"]["email"] for e in rest["edges"]] == ["user1@example.org", "user0@example.org"]
    assert rest["pageInfo"]["hasNextPage"] is False

    found = data(await gql(LIST, {"first": 10, "search": "ELSEWHERE"}))["suppressions"]
    assert [e["node"]["email"] for e in found["edges"]] == ["other@elsewhere.net"]
    assert data(await gql(LIST, {"first": 10, "search": "%"}))["suppressions"]["totalCount"] == 0

    # Erased (issue 5 keeps only the hash): still found by the whole address, and still suppressing it.
    async with db.transaction() as session:
        await session.execute(
            update(Suppression).where(Suppression.email == "user1@example.org").values(email=None)
        )
    erased = data(await gql(LIST, {"first": 10, "search": "user1@example.org"}))["suppressions"]
    assert [e["node"]["email"] for e in erased["edges"]] == [None]
    assert (await add(gql, "user1@example.org"))["userErrors"][0]["code"] == "ALREADY_SUPPRESSED"  # type: ignore[index]


async def test_viewer_keys_cannot_change_the_list(gql: GQL, db: Database) -> None:
    viewer = await make_key(db, Role.VIEWER, "viewer")
    out = await gql(ADD, {"input": {"email": "a@example.org"}}, key=viewer)
    assert out["data"] is None
    assert out["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    listed = data(await gql(LIST, {"first": 5}, key=viewer))
    assert listed["suppressions"]["totalCount"] == 0
