"""Fuzzing /graphql with schemathesis: every query and mutation of the schema, with generated arguments
(and ids of real rows mixed with malformed and out-of-range ones), sent over real HTTP as an ADMIN key.

Whatever the input, the answer is never an HTTP 5xx, never "Unexpected error." and never shows a traceback,
SQL or a driver's message: bad input gets a coded error. Bounded for CI: EMAILKIT_FUZZ_EXAMPLES examples
per operation (default 12; about a minute per database), derandomized so every run tries the same cases.
Marked `fuzz` so CI can run it as a job of its own (`pytest -m fuzz`); a plain `pytest` runs it too.
Failing examples it found are kept as regression tests in test_bad_input.py.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import graphql
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.graphql.scalars import CUSTOM_SCALARS

from emailkit import globalid
from emailkit.app import create_app
from emailkit.domain.runtime import Runtime
from emailkit.schema import build_schema
from emailkit.settings import Settings
from tests.support.graphql import GQL, data
from tests.support.live_server import live_server

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("EMAILKIT_FUZZ_EXAMPLES", "12"))
# What must never reach a client: internals of the server, the database or its driver.
LEAKS = (
    "Unexpected error",
    "Traceback",
    'File "',
    "sqlalchemy",
    "asyncpg",
    "psycopg",
    "sqlite3",
    "aiosqlite",
    "SQL:",
    "Background on this error",
    "IntegrityError",
    "DataError",
    "OperationalError",
    "ProgrammingError",
)
TYPES = ("MailingList", "Subscriber", "Template", "Campaign", "Segment", "Delivery", "Import", "Event")


async def seed(gql: GQL) -> list[str]:
    """A few rows of each kind, so generated ids reach real objects and not only "not found"."""
    ids: list[str] = []

    async def run(query: str, variables: dict[str, Any], *path: str) -> str:
        result: Any = data(await gql(query, variables))
        for key in path:
            result = result[key]
        ids.append(result)
        return str(result)

    list_id = await run(
        "mutation($i: CreateListInput!) { createList(input: $i) { list { id } } }",
        {"i": {"name": "Fuzz", "optin": "SINGLE", "visibility": "PUBLIC"}},
        "createList",
        "list",
        "id",
    )
    await run(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } } }",
        {
            "i": {
                "email": "fuzz@example.com",
                "name": "F",
                "attributes": {"city": "Oslo"},
                "listIds": [list_id],
            }
        },
        "createSubscriber",
        "subscriber",
        "id",
    )
    await run(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } } }",
        {"i": {"name": "T", "kind": "CAMPAIGN", "format": "HTML", "body": "<p>{{ subscriber.name }}</p>"}},
        "createTemplate",
        "template",
        "id",
    )
    await run(
        "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } } }",
        {
            "i": {
                "name": "C",
                "subject": "S",
                "fromEmail": "news@example.com",
                "listIds": [list_id],
                "format": "HTML",
                "body": "<p>x</p>",
            }
        },
        "createCampaign",
        "campaign",
        "id",
    )
    await run(
        "mutation($i: CreateSegmentInput!) { createSegment(input: $i) { segment { id } } }",
        {"i": {"name": "Seg", "filter": {"attribute": {"path": "city", "op": "EQ", "value": "Oslo"}}}},
        "createSegment",
        "segment",
        "id",
    )
    return ids


# Strings that once reached the database and failed there, or that look like what a careless error echoes.
EDGE_STRINGS = [
    "a\x00b",
    "\ud800",
    "é",
    "fuzz@example.com",
    "new@example.com",
    "x" * 300,
    "99999999999999999999999",
    "-1",
    "city",
    "address.city",
    "'; SELECT 1; --",
    "{{ subscriber.name }}",
    "{% for x in y %}",
    "<mjml><mj-body></mj-body></mjml>",
]


def string_strategy() -> st.SearchStrategy[graphql.ValueNode]:
    return st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=40)).map(
        lambda value: graphql.StringValueNode(value=value)
    )


def id_strategy(real: list[str]) -> st.SearchStrategy[graphql.ValueNode]:
    edge_cases = [
        globalid.encode(name, pk) for name in TYPES for pk in (0, 2**63 - 1, 2**63, 2**64 + 1, 10**30)
    ] + ["", "é", "k:1", "TWFpbGluZ0xpc3Q6LTE", "99999999999999999999999", "\x00"]
    return st.one_of(st.sampled_from(real), st.sampled_from(edge_cases), st.text(max_size=24)).map(
        lambda value: graphql.StringValueNode(value=value)
    )


@contextmanager
def scalars(**strategies: st.SearchStrategy[graphql.ValueNode]) -> Iterator[None]:
    # schemathesis keeps custom scalars in a process-wide registry: set them for this test only.
    previous = dict(CUSTOM_SCALARS)
    for name, strategy in strategies.items():
        schemathesis.graphql.scalar(name, strategy)
    try:
        yield
    finally:
        CUSTOM_SCALARS.clear()
        CUSTOM_SCALARS.update(previous)


def leaks(response: requests.Response) -> list[str]:
    """Why this response is unacceptable; empty when it is fine."""
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}: {response.text[:500]}"]
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON (HTTP {response.status_code}): {response.text[:500]}"]
    problems = []
    for error in body.get("errors") or []:
        text = json.dumps(error, ensure_ascii=False)
        problems += [f"{marker!r} in {text[:500]}" for marker in LEAKS if marker in text]
    return problems


def fuzz_operation(operation: Any, base_url: str, session: requests.Session) -> str | None:
    """The smallest failing request for one operation and why it failed, or None."""
    failure: list[str] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
    )
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=60)
        problems = leaks(response)
        if problems:
            # Hypothesis replays the smallest failing example last: that is the one kept.
            failure[:] = [f"{case.body}\n  -> " + "\n  -> ".join(problems)]
            raise AssertionError(problems)

    try:
        check()
    except AssertionError:
        return failure[0]
    return None


def fuzz(base_url: str, key: str, ids: list[str]) -> dict[str, str]:
    """Run every operation's examples; the smallest failing request per failing operation."""
    failures: dict[str, str] = {}
    with scalars(ID=id_strategy(ids), String=string_strategy()):
        schema = schemathesis.graphql.from_dict({"data": build_schema().introspect()})
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 40, [op.label for op in operations]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        for operation in operations:
            found = fuzz_operation(operation, base_url, session)
            if found is not None:
                failures[operation.label] = found
    return failures


async def test_no_input_gets_an_internal_error(
    gql: GQL, admin_key: str, settings: Settings, runtime: Runtime
) -> None:
    ids = await seed(gql)
    async with live_server(create_app(settings, runtime)) as address:
        failures = await asyncio.to_thread(fuzz, f"http://{address}/graphql", admin_key, ids)
    assert not failures, "\n\n".join(f"{label}:\n{detail}" for label, detail in failures.items())
