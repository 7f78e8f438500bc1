"""Automatic Persisted Queries (Apollo's protocol) over POST and GET."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from emailkit.web.persisted import PersistedQueries, PersistedQueryError
from tests.support.graphql import GQL, data

LISTS = "query Lists($first: Int!) { lists(first: $first) { edges { node { name } } } }"
CREATE = 'mutation Make { createList(input: {name: "By GET"}) { userErrors { code } } }'


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def persisted(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(text)}}


@pytest.fixture
def auth(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


async def seed_lists(gql: GQL, n: int) -> None:
    for i in range(n):
        made = await gql(f'mutation {{ createList(input: {{name: "L{i}"}}) {{ userErrors {{ code }} }} }}')
        assert data(made) == {"createList": {"userErrors": []}}


def names(body: dict[str, Any]) -> list[str]:
    return [e["node"]["name"] for e in data(body)["lists"]["edges"]]


def get_params(variables: dict[str, Any], **extra: str) -> dict[str, str]:
    """The query string of a GET running LISTS by its hash."""
    return {"extensions": json.dumps(persisted(LISTS)), "variables": json.dumps(variables), **extra}


async def test_register_then_run_by_hash(gql: GQL, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await seed_lists(gql, 3)
    # Apollo's link: the hash alone first, a miss, then the hash with the text.
    miss = await client.post(
        "/graphql", json={"variables": {"first": 2}, "extensions": persisted(LISTS)}, headers=auth
    )
    assert miss.status_code == 200
    assert miss.json() == {
        "errors": [{"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
    }
    assert "no-cache" in miss.headers["cache-control"]
    registered = await client.post(
        "/graphql",
        json={"query": LISTS, "variables": {"first": 2}, "extensions": persisted(LISTS)},
        headers=auth,
    )
    assert registered.status_code == 200 and names(registered.json()) == ["L0", "L1"]
    for first, expected in ((2, ["L0", "L1"]), (3, ["L0", "L1", "L2"])):
        hit = await client.post(
            "/graphql", json={"variables": {"first": first}, "extensions": persisted(LISTS)}, headers=auth
        )
        assert hit.status_code == 200 and names(hit.json()) == expected
    # Upper-case hex names the same query.
    upper = {"persistedQuery": {"version": 1, "sha256Hash": sha(LISTS).upper()}}
    hit = await client.post("/graphql", json={"variables": {"first": 1}, "extensions": upper}, headers=auth)
    assert names(hit.json()) == ["L0"]


async def test_a_hash_that_is_not_the_querys_is_refused_and_not_stored(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    other = "{ viewer { name } }"
    wrong = await client.post(
        "/graphql",
        json={"query": other, "extensions": persisted(LISTS), "variables": {"first": 1}},
        headers=auth,
    )
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
    after = await client.post(
        "/graphql", json={"variables": {"first": 1}, "extensions": persisted(LISTS)}, headers=auth
    )
    assert after.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


@pytest.mark.parametrize(
    ("extension", "code"),
    [
        ({"version": 2, "sha256Hash": "0" * 64}, "PERSISTED_QUERY_NOT_SUPPORTED"),
        ({"version": 1, "sha256Hash": "xyz"}, "PERSISTED_QUERY_INVALID"),
        ({"version": 1}, "PERSISTED_QUERY_INVALID"),
        ("abc", "PERSISTED_QUERY_INVALID"),
    ],
)
async def test_malformed_extensions_are_coded_400s(
    client: httpx.AsyncClient, auth: dict[str, str], extension: Any, code: str
) -> None:
    resp = await client.post("/graphql", json={"extensions": {"persistedQuery": extension}}, headers=auth)
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["extensions"]["code"] == code


async def test_get_with_variables_and_operation_name(
    gql: GQL, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    await seed_lists(gql, 3)
    miss = await client.get("/graphql", params=get_params({"first": 1}), headers=auth)
    assert miss.status_code == 200
    assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    registered = await client.get(
        "/graphql", params=get_params({"first": 1}, query=LISTS, operationName="Lists"), headers=auth
    )
    assert registered.status_code == 200 and names(registered.json()) == ["L0"]
    # A browser's Accept header does not turn the persisted GET into the IDE page.
    browser = {**auth, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for headers in (auth, browser, {**auth, "Accept": "*/*"}):
        hit = await client.get(
            "/graphql", params=get_params({"first": 2}, operationName="Lists"), headers=headers
        )
        assert hit.status_code == 200, hit.text
        assert hit.headers["content-type"] == "application/json"
        assert names(hit.json()) == ["L0", "L1"]


async def test_get_never_runs_a_mutation_even_one_stored_by_post(
    gql: GQL, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # Stored by POST, where mutations are allowed ...
    made = await client.post(
        "/graphql", json={"query": CREATE, "extensions": persisted(CREATE)}, headers=auth
    )
    assert data(made.json()) == {"createList": {"userErrors": []}}
    # ... refused by GET, by hash alone or with the text.
    by_hash = await client.get("/graphql", params={"extensions": json.dumps(persisted(CREATE))}, headers=auth)
    assert by_hash.status_code == 400 and "mutations are not allowed" in by_hash.text.lower()
    with_text = await client.get(
        "/graphql", params={"query": CREATE, "extensions": json.dumps(persisted(CREATE))}, headers=auth
    )
    assert with_text.status_code == 400
    assert data(await gql("{ lists { totalCount } }")) == {"lists": {"totalCount": 1}}


async def test_a_persisted_query_needs_a_key(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    registered = await client.post(
        "/graphql",
        json={"query": LISTS, "variables": {"first": 1}, "extensions": persisted(LISTS)},
        headers=auth,
    )
    assert registered.status_code == 200
    for headers in (
        {},
        {"Accept": "text/html"},
        {"Authorization": "Bearer ek_nosuchkeynosuchkeynosuchkey0000"},
    ):
        by_get = await client.get("/graphql", params=get_params({"first": 1}), headers=headers)
        assert by_get.status_code == 401, by_get.text
        by_post = await client.post(
            "/graphql", json={"variables": {"first": 1}, "extensions": persisted(LISTS)}, headers=headers
        )
        assert by_post.status_code == 401
    # Registering needs a key too.
    other = "{ viewer { role } }"
    anonymous = await client.post("/graphql", json={"query": other, "extensions": persisted(other)})
    assert anonymous.status_code == 401
    later = await client.post("/graphql", json={"extensions": persisted(other)}, headers=auth)
    assert later.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


def test_the_store_is_bounded() -> None:
    store = PersistedQueries(max_entries=2, max_chars=1000, max_query_chars=100)
    texts = ["{ a }", "{ b }", "{ c }"]
    for text in texts:
        assert store.resolve(text, {"version": 1, "sha256Hash": sha(text)}) == text
    assert len(store) == 2
    with pytest.raises(PersistedQueryError) as evicted:
        store.resolve(None, {"version": 1, "sha256Hash": sha("{ a }")})
    assert evicted.value.code == "PERSISTED_QUERY_NOT_FOUND" and evicted.value.status_code == 200
    assert store.resolve(None, {"version": 1, "sha256Hash": sha("{ c }")}) == "{ c }"
    # A text over the size bound is run, not stored.
    long = "{ " + "x " * 60 + "}"
    assert store.resolve(long, {"version": 1, "sha256Hash": sha(long)}) == long
    with pytest.raises(PersistedQueryError):
        store.resolve(None, {"version": 1, "sha256Hash": sha(long)})
