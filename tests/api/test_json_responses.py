"""Responses are encoded with orjson and mean exactly what the standard encoder's output meant."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from strawberry.asgi import GraphQL

from emailkit.web.graphql import json_bytes
from tests.support.graphql import GQL, data

ATTRIBUTES = {
    "city": "Zürich",
    "emoji": "📬 ✓",
    "big": 2**70,  # beyond orjson's 64 bits: the standard encoder writes it
    "small": -(2**63),
    "ratio": 0.1,
    "tags": ["a", None, True, {"deep": [1.5, "x"]}],
    "quote": 'say "hi"\n\t\\',
}


@pytest.mark.parametrize(
    "value",
    [
        ATTRIBUTES,
        {"lone": "a\ud800b"},  # no UTF-8 for it: the standard encoder escapes it
        {"data": None, "errors": [{"message": "é", "locations": [{"line": 1, "column": 2}]}]},
        [],
        {"": {"1": 1e-7, "huge": 1e300}},
    ],
)
def test_the_encoding_has_the_meaning_of_the_standard_one(value: Any) -> None:
    standard = GraphQL.encode_json(object.__new__(GraphQL), value)
    assert json.loads(json_bytes(value)) == json.loads(standard)


async def test_a_page_reads_back_exactly_what_was_stored(
    gql: GQL, client: httpx.AsyncClient, admin_key: str
) -> None:
    created = data(
        await gql(
            "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
            {"i": {"email": "zoe@example.com", "name": "Zoë “Z” Ñandú", "attributes": ATTRIBUTES}},
        )
    )
    assert created == {"createSubscriber": {"userErrors": []}}
    resp = await client.post(
        "/graphql",
        json={"query": "{ subscribers(first: 5) { edges { node { email name attributes } } } }"},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = json.loads(resp.content.decode("utf-8"))
    assert data(body)["subscribers"]["edges"] == [
        {"node": {"email": "zoe@example.com", "name": "Zoë “Z” Ñandú", "attributes": ATTRIBUTES}}
    ]
    assert body["extensions"]["cost"]["limit"] == 20_000
