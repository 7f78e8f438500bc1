"""The subscriber API's GraphQL documents and the helpers its tests share (create, search, count)."""

from __future__ import annotations

from typing import Any

from tests.support.graphql import GQL, data

SUBSCRIBER_FIELDS = """
id email name attributes status createdAt updatedAt
subscriptions { list { id name } status createdAt updatedAt }
"""

CREATE = f"""
mutation($input: CreateSubscriberInput!) {{
  createSubscriber(input: $input) {{
    subscriber {{ {SUBSCRIBER_FIELDS} }}
    userErrors {{ field message code }}
  }}
}}
"""

SUBSCRIBE = """
mutation($input: SubscribeToListsInput!) {
  subscribeToLists(input: $input) {
    subscribers { email subscriptions { list { name } status updatedAt } }
    userErrors { field code }
  }
}
"""

UNSUBSCRIBE = """
mutation($input: UnsubscribeFromListsInput!) {
  unsubscribeFromLists(input: $input) {
    subscribers { email subscriptions { list { name } status updatedAt } }
    userErrors { field code }
  }
}
"""

DELETE = """
mutation($input: DeleteSubscriberInput!) {
  deleteSubscriber(input: $input) { deletedId userErrors { field code } }
}
"""

SEARCH = """
query($first: Int, $after: String, $search: String, $listId: ID, $status: SubscriberStatus,
      $subscriptionStatus: SubscriptionStatus) {
  subscribers(first: $first, after: $after, search: $search, listId: $listId, status: $status,
              subscriptionStatus: $subscriptionStatus) {
    totalCount
    edges { cursor node { email } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def create(gql: GQL, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"input": fields}))["createSubscriber"]
    return out


async def make_subscriber(gql: GQL, email: str, **fields: Any) -> dict[str, Any]:
    out = await create(gql, email=email, **fields)
    assert out["userErrors"] == [], out["userErrors"]
    subscriber: dict[str, Any] = out["subscriber"]
    return subscriber


async def emails(gql: GQL, **variables: Any) -> list[str]:
    conn = data(await gql(SEARCH, variables))["subscribers"]
    return [e["node"]["email"] for e in conn["edges"]]


async def total(gql: GQL, **variables: Any) -> int:
    count: int = data(await gql(SEARCH, variables))["subscribers"]["totalCount"]
    return count


def statuses(subscriber: dict[str, Any]) -> dict[str, str]:
    return {s["list"]["name"]: s["status"] for s in subscriber["subscriptions"]}


async def subscriber_count(gql: GQL, list_id: str) -> int:
    n: int = data(await gql("query($id: ID!) { list(id: $id) { subscriberCount } }", {"id": list_id}))[
        "list"
    ]["subscriberCount"]
    return n
