from __future__ import annotations

from tests.support.graphql import GQL, data

CREATE = """
mutation($input: CreateListInput!) {
  createList(input: $input) {
    list { id name description optin visibility tags subscriberCount }
    userErrors { field message code }
  }
}
"""


async def test_create_list_and_fetch_it(gql: GQL) -> None:
    out = data(
        await gql(CREATE, {"input": {"name": "Newsletter", "optin": "DOUBLE", "tags": ["b", "a", "a"]}})
    )
    created = out["createList"]
    assert created["userErrors"] == []
    lst = created["list"]
    assert lst["name"] == "Newsletter"
    assert lst["optin"] == "DOUBLE"
    assert lst["visibility"] == "PRIVATE"
    assert lst["tags"] == ["a", "b"]
    assert lst["subscriberCount"] == 0

    got = data(
        await gql(
            "query($id: ID!) { list(id: $id) { name } node(id: $id) { id ... on MailingList { name } } }",
            {"id": lst["id"]},
        )
    )
    assert got["list"]["name"] == "Newsletter"
    assert got["node"] == {"id": lst["id"], "name": "Newsletter"}


async def test_blank_name_is_a_user_error(gql: GQL) -> None:
    out = data(await gql(CREATE, {"input": {"name": "   "}}))
    assert out["createList"]["list"] is None
    assert out["createList"]["userErrors"] == [
        {"field": "name", "message": "Name is required", "code": "REQUIRED"}
    ]


async def test_update_and_delete_list(gql: GQL) -> None:
    lst = data(await gql(CREATE, {"input": {"name": "A"}}))["createList"]["list"]
    upd = data(
        await gql(
            "mutation($i: UpdateListInput!) { updateList(input: $i) { list { name visibility } userErrors { code } } }",
            {"i": {"id": lst["id"], "name": "B", "visibility": "PUBLIC"}},
        )
    )["updateList"]
    assert upd == {"list": {"name": "B", "visibility": "PUBLIC"}, "userErrors": []}

    dele = data(
        await gql(
            "mutation($i: DeleteListInput!) { deleteList(input: $i) { deletedId userErrors { code } } }",
            {"i": {"id": lst["id"]}},
        )
    )["deleteList"]
    assert dele == {"deletedId": lst["id"], "userErrors": []}
    again = data(
        await gql(
            "mutation($i: DeleteListInput!) { deleteList(input: $i) { deletedId userErrors { code } } }",
            {"i": {"id": lst["id"]}},
        )
    )["deleteList"]
    assert again == {"deletedId": None, "userErrors": [{"code": "LIST_NOT_FOUND"}]}


async def test_malformed_id_is_a_user_error(gql: GQL) -> None:
    out = data(
        await gql(
            "mutation($i: UpdateListInput!) { updateList(input: $i) { list { id } userErrors { field code } } }",
            {"i": {"id": "not-an-id", "name": "x"}},
        )
    )["updateList"]
    assert out == {"list": None, "userErrors": [{"field": "id", "code": "INVALID_ID"}]}


async def test_lists_pagination_and_search(gql: GQL) -> None:
    for i in range(5):
        data(await gql(CREATE, {"input": {"name": f"list {i}", "description": "weekly" if i % 2 else ""}}))
    q = "query($a: String, $s: String) { lists(first: 2, after: $a, search: $s) { totalCount edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }"
    page1 = data(await gql(q, {}))["lists"]
    assert page1["totalCount"] == 5
    assert [e["node"]["name"] for e in page1["edges"]] == ["list 0", "list 1"]
    assert page1["pageInfo"]["hasNextPage"] is True
    page3 = data(
        await gql(
            q,
            {
                "a": data(await gql(q, {"a": page1["pageInfo"]["endCursor"]}))["lists"]["pageInfo"][
                    "endCursor"
                ]
            },
        )
    )["lists"]
    assert [e["node"]["name"] for e in page3["edges"]] == ["list 4"]
    assert page3["pageInfo"]["hasNextPage"] is False
    searched = data(await gql(q, {"s": "WEEK"}))["lists"]
    assert searched["totalCount"] == 2


async def test_first_is_capped(gql: GQL) -> None:
    body = await gql("{ lists(first: 1000) { totalCount } }")
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
