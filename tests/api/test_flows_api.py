"""The flows API: create, edit the draft, publish versions, pause, resume and archive; every validation error
as a userError with the domain's code; runs, their ledger and Subscriber.flowRuns read from rows written as
the runner would; roles; live `flowStats` over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection, connect

from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.automation import Flow as FlowRow
from emailkit.db.tables.automation import FlowRun, FlowRunStatus, FlowStepRunStatus, FlowStepStats
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.automation.definition import StepType
from emailkit.domain.automation.live import publish_flow_stats
from emailkit.domain.ports.queue import PubSub
from emailkit.domain.runtime import Runtime
from emailkit.domain.webhooks_out import destinations
from emailkit.schema.relay import to_global_id
from emailkit.schema.types.flows import FlowStepKind
from emailkit.settings import Settings
from tests.support.database import recorded_statements
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.flows_api import (
    ARCHIVE_FLOW,
    CREATE_FLOW,
    FLOW,
    PAUSE_FLOW,
    PUBLISH_FLOW,
    RESUME_FLOW,
    UPDATE_FLOW,
    Content,
    create_flow,
    insert_run,
    make_content,
    pk,
    published_flow,
    welcome_series,
)
from tests.support.graphql import GQL, data, graphql_runner
from tests.support.live_server import live_server
from tests.support.subscribers import make_subscriber


@pytest.fixture
async def content(gql: GQL) -> Content:
    return await make_content(gql)


def keys(flow: dict[str, Any]) -> list[str]:
    return [s["key"] for s in flow["steps"]]


def errors_of(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def flows_total(gql: GQL) -> int:
    total: int = data(await gql("{ flows { totalCount } }"))["flows"]["totalCount"]
    return total


# --- create and read back --------------------------------------------------------------------------------


async def test_a_created_flow_reads_back_as_it_was_given(gql: GQL, content: Content) -> None:
    values = {**welcome_series(content), "reentry": "AFTER_SECONDS", "reentrySeconds": 3600}
    made = await create_flow(gql, values)
    assert made["userErrors"] == []
    flow = made["flow"]
    assert (flow["name"], flow["status"], flow["version"], flow["hasUnpublishedChanges"]) == (
        "Welcome series",
        "DRAFT",
        0,
        True,
    )
    assert flow["stats"] == {"entered": 0, "active": 0, "completed": 0, "exited": 0}
    # Before the first publish the flow shows its draft.
    assert flow["trigger"]["type"] == "SUBSCRIBED"
    assert flow["trigger"]["list"] == {"id": content.welcome_list}
    assert keys(flow) == ["welcome", "wait", "opened", "tag", "reminder"]
    welcome, wait, branch, tag, reminder = flow["steps"]
    assert welcome["type"] == "SEND" and welcome["template"] == {"id": content.template}
    assert (welcome["subject"], welcome["fromEmail"], welcome["fromName"], welcome["next"]) == (
        "Welcome!",
        "hello@example.com",
        "Shop",
        "wait",
    )
    assert (welcome["trackOpens"], welcome["trackClicks"]) == (True, True)
    assert (reminder["trackClicks"], reminder["subject"], reminder["next"]) == (False, None, None)
    assert (wait["type"], wait["waitSeconds"], wait["window"]) == ("WAIT", 86400, None)
    assert branch["condition"] == {"engagement": {"event": "OPENED", "flowStep": "welcome"}}
    assert (branch["then"], branch["otherwise"]) == ("tag", "reminder")
    assert tag["setAttributes"] == {"welcomed": True}
    assert tag["addLists"] == [{"id": content.customers_list}] and tag["removeLists"] == []
    assert flow["exitWhen"] == {"attribute": {"path": "bought", "op": "EQ", "value": True}}
    assert (flow["reentry"], flow["reentrySeconds"]) == ("AFTER_SECONDS", 3600)
    assert flow["draft"]["steps"] == flow["steps"]

    read = data(await gql(FLOW, {"id": flow["id"]}))["flow"]
    assert read == flow
    listed = data(await gql("{ flows { totalCount edges { node { id name } } } }"))["flows"]
    assert listed["totalCount"] == 1 and listed["edges"][0]["node"] == {
        "id": flow["id"],
        "name": "Welcome series",
    }
    node = data(
        await gql("query($id: ID!) { node(id: $id) { id ... on Flow { name } } }", {"id": flow["id"]})
    )
    assert node["node"] == {"id": flow["id"], "name": "Welcome series"}


async def test_every_trigger_type_and_a_window_read_back(gql: GQL, content: Content) -> None:
    segment = data(
        await gql(
            "mutation($i: CreateSegmentInput!) { createSegment(input: $i) { segment { id } } }",
            {"i": {"name": "All", "filter": {}}},
        )
    )["createSegment"]["segment"]["id"]
    campaign = data(
        await gql(
            "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } } }",
            {
                "i": {
                    "name": "News",
                    "subject": "News",
                    "fromEmail": "news@example.com",
                    "listIds": [content.welcome_list],
                    "templateId": content.template,
                }
            },
        )
    )["createCampaign"]["campaign"]["id"]
    triggers = [
        ({"type": "EVENT", "eventName": "order.placed"}, {"eventName": "order.placed"}),
        (
            {"type": "DATE_ATTRIBUTE", "attribute": "birthday"},
            {"attribute": "birthday", "timeOfDay": "09:00"},
        ),
        ({"type": "DATE_ATTRIBUTE", "attribute": "signup", "timeOfDay": "18:30"}, {"timeOfDay": "18:30"}),
        ({"type": "SEGMENT_ENTERED", "segmentId": segment}, {"segment": {"id": segment}}),
        (
            {"type": "ENGAGED", "campaignId": campaign, "linkUrl": "https://example.com/sale"},
            {"campaign": {"id": campaign}, "linkUrl": "https://example.com/sale"},
        ),
    ]
    window = {"weekdays": [5, 1], "start": "09:00", "end": "17:30"}
    steps = [{"key": "w", "type": "WAIT", "window": window, "next": "x"}, {"key": "x", "type": "EXIT"}]
    for given, shown in triggers:
        made = await create_flow(gql, {"name": given["type"], "trigger": given, "steps": steps})
        assert made["userErrors"] == [], (given, made["userErrors"])
        trigger = made["flow"]["trigger"]
        assert trigger["type"] == given["type"]
        assert {k: trigger[k] for k in shown} == shown
        assert made["flow"]["steps"][0]["window"] == {"weekdays": [1, 5], "start": "09:00", "end": "17:30"}


def test_the_step_types_are_the_domains() -> None:
    assert {k.value for k in FlowStepKind} == set(StepType.ALL)


# --- editing the draft ------------------------------------------------------------------------------------


async def test_update_changes_the_parts_given_and_keeps_the_others(gql: GQL, content: Content) -> None:
    values = {**welcome_series(content), "reentry": "AFTER_SECONDS", "reentrySeconds": 60}
    flow = (await create_flow(gql, values))["flow"]

    renamed = data(await gql(UPDATE_FLOW, {"i": {"id": flow["id"], "name": "Hello series"}}))["updateFlow"]
    assert renamed["userErrors"] == []
    assert renamed["flow"]["name"] == "Hello series"
    assert renamed["flow"]["draft"] == flow["draft"]

    steps = [{"key": "only", "type": "EXIT"}]
    out = data(await gql(UPDATE_FLOW, {"i": {"id": flow["id"], "steps": steps}}))["updateFlow"]
    assert out["userErrors"] == []
    draft = out["flow"]["draft"]
    assert [s["key"] for s in draft["steps"]] == ["only"]
    assert draft["trigger"] == flow["draft"]["trigger"]
    assert (draft["reentry"], draft["reentrySeconds"], draft["exitWhen"]) == (
        "AFTER_SECONDS",
        60,
        flow["draft"]["exitWhen"],
    )

    cleared = data(
        await gql(
            UPDATE_FLOW, {"i": {"id": flow["id"], "reentry": None, "reentrySeconds": None, "exitWhen": None}}
        )
    )["updateFlow"]
    assert cleared["userErrors"] == []
    draft = cleared["flow"]["draft"]
    assert (draft["reentry"], draft["reentrySeconds"], draft["exitWhen"]) == ("ONCE", None, None)
    assert [s["key"] for s in draft["steps"]] == ["only"]


async def test_a_refused_update_changes_nothing(gql: GQL, content: Content) -> None:
    flow = (await create_flow(gql, welcome_series(content)))["flow"]
    bad = [{"key": "a", "type": "WAIT", "waitSeconds": 0}]
    out = data(await gql(UPDATE_FLOW, {"i": {"id": flow["id"], "name": "New", "steps": bad}}))["updateFlow"]
    assert (out["flow"], errors_of(out)) == (None, [("steps[0].waitSeconds", "OUT_OF_RANGE")])
    assert data(await gql(FLOW, {"id": flow["id"]}))["flow"] == flow


# --- validation -------------------------------------------------------------------------------------------

MISSING_LIST = to_global_id("MailingList", 987_654)
MISSING_TEMPLATE = to_global_id("Template", 987_654)


def send(key: str, content: Content, **more: Any) -> dict[str, Any]:
    return {"key": key, "type": "SEND", "templateId": content.template, "fromEmail": "a@example.com", **more}


# name -> (the CreateFlowInput's changes, made from the content) -> the userErrors expected
INVALID: dict[str, tuple[Callable[[Content], dict[str, Any]], list[tuple[str | None, str]]]] = {
    "missing step key": (
        lambda c: {"steps": [{"key": "", "type": "EXIT"}]},
        [("steps[0].key", "REQUIRED")],
    ),
    "repeated step key": (
        lambda c: {
            "steps": [send("a", c, next="b"), {"key": "b", "type": "EXIT"}, {"key": "a", "type": "EXIT"}]
        },
        [("steps[2].key", "DUPLICATE_STEP_KEY")],
    ),
    "unknown next": (
        lambda c: {"steps": [send("a", c, next="nowhere")]},
        [("steps[0].next", "UNKNOWN_STEP")],
    ),
    "unknown branch exit": (
        lambda c: {
            "steps": [
                {"key": "b", "type": "BRANCH", "condition": {}, "then": "x", "otherwise": "gone"},
                {"key": "x", "type": "EXIT"},
            ]
        },
        [("steps[0].otherwise", "UNKNOWN_STEP")],
    ),
    "cycle without a wait": (
        lambda c: {
            "steps": [
                send("a", c, next="b"),
                {"key": "b", "type": "UPDATE", "setAttributes": {"n": 1}, "next": "a"},
            ]
        },
        [("steps", "CYCLE_WITHOUT_WAIT")],
    ),
    "SEND without a template": (
        lambda c: {"steps": [{"key": "a", "type": "SEND", "fromEmail": "a@example.com"}]},
        [("steps[0].templateId", "REQUIRED")],
    ),
    "SEND without a from address": (
        lambda c: {"steps": [{"key": "a", "type": "SEND", "templateId": c.template}]},
        [("steps[0].fromEmail", "REQUIRED")],
    ),
    "BRANCH without both exits": (
        lambda c: {
            "steps": [
                {"key": "b", "type": "BRANCH", "condition": {}, "then": "x"},
                {"key": "x", "type": "EXIT"},
            ]
        },
        [("steps[0]", "REQUIRED")],
    ),
    "BRANCH without a condition": (
        lambda c: {
            "steps": [
                {"key": "b", "type": "BRANCH", "then": "x", "otherwise": "x"},
                {"key": "x", "type": "EXIT"},
            ]
        },
        [("steps[0].condition", "REQUIRED")],
    ),
    "WAIT under a second": (
        lambda c: {"steps": [{"key": "w", "type": "WAIT", "waitSeconds": 0}]},
        [("steps[0].waitSeconds", "OUT_OF_RANGE")],
    ),
    "WAIT over a year": (
        lambda c: {"steps": [{"key": "w", "type": "WAIT", "waitSeconds": 365 * 86400 + 1}]},
        [("steps[0].waitSeconds", "OUT_OF_RANGE")],
    ),
    "WAIT with neither duration nor window": (
        lambda c: {"steps": [{"key": "w", "type": "WAIT"}]},
        [("steps[0].waitSeconds", "REQUIRED")],
    ),
    "window ending before it starts": (
        lambda c: {"steps": [{"key": "w", "type": "WAIT", "window": {"start": "17:00", "end": "09:00"}}]},
        [("steps[0].window", "OUT_OF_RANGE")],
    ),
    "UPDATE doing nothing": (
        lambda c: {"steps": [{"key": "u", "type": "UPDATE"}]},
        [("steps[0]", "REQUIRED")],
    ),
    "unknown list in the trigger": (
        lambda c: {"trigger": {"type": "SUBSCRIBED", "listId": MISSING_LIST}},
        [("trigger.listId", "LIST_NOT_FOUND")],
    ),
    "unknown list of an UPDATE": (
        lambda c: {
            "steps": [{"key": "u", "type": "UPDATE", "removeListIds": [c.customers_list, MISSING_LIST]}]
        },
        [("steps[0]", "LIST_NOT_FOUND")],
    ),
    "unknown template": (
        lambda c: {"steps": [{**send("a", c), "templateId": MISSING_TEMPLATE}]},
        [("steps[0].templateId", "TEMPLATE_NOT_FOUND")],
    ),
    "unknown list in a condition": (
        lambda c: {
            "steps": [
                {
                    "key": "b",
                    "type": "BRANCH",
                    "condition": {"list": {"listId": MISSING_LIST}},
                    "then": "x",
                    "otherwise": "x",
                },
                {"key": "x", "type": "EXIT"},
            ]
        },
        [("steps[0].condition.list.listId", "LIST_NOT_FOUND")],
    ),
    "a template's ID for a list": (
        lambda c: {"trigger": {"type": "SUBSCRIBED", "listId": c.template}},
        [("trigger.listId", "INVALID_ID")],
    ),
    "SUBSCRIBED without a list": (
        lambda c: {"trigger": {"type": "SUBSCRIBED"}},
        [("trigger.listId", "REQUIRED")],
    ),
    "a time of day that is none": (
        lambda c: {"trigger": {"type": "DATE_ATTRIBUTE", "attribute": "birthday", "timeOfDay": "25:00"}},
        [("trigger.timeOfDay", "OUT_OF_RANGE")],
    ),
    "AFTER_SECONDS without seconds": (
        lambda c: {"reentry": "AFTER_SECONDS"},
        [("reentrySeconds", "OUT_OF_RANGE")],
    ),
    "flowStep naming no step": (
        lambda c: {
            "steps": [
                send("a", c, next="b"),
                {
                    "key": "b",
                    "type": "BRANCH",
                    "condition": {"engagement": {"event": "CLICKED", "flowStep": "z"}},
                    "then": "x",
                    "otherwise": "x",
                },
                {"key": "x", "type": "EXIT"},
            ]
        },
        [("steps[1].condition.engagement.flowStep", "UNKNOWN_STEP")],
    ),
    "flowStep in the exit condition": (
        lambda c: {"exitWhen": {"engagement": {"event": "OPENED", "flowStep": "welcome"}}},
        [("exitWhen.engagement.flowStep", "INVALID_FILTER")],
    ),
    "a blank name": (lambda c: {"name": "  "}, [("name", "REQUIRED")]),
}


@pytest.mark.parametrize("case", INVALID, ids=str)
async def test_an_invalid_definition_is_refused_with_the_domains_code(
    case: str, gql: GQL, content: Content
) -> None:
    change, expected = INVALID[case]
    out = await create_flow(gql, {**welcome_series(content), **change(content)})
    assert out["flow"] is None
    assert errors_of(out) == expected
    assert await flows_total(gql) == 0


async def test_a_loop_through_a_wait_is_accepted(gql: GQL, content: Content) -> None:
    steps = [
        send("mail", content, next="pause"),
        {"key": "pause", "type": "WAIT", "waitSeconds": 1, "next": "mail"},
    ]
    out = await create_flow(gql, {**welcome_series(content), "steps": steps})
    assert out["userErrors"] == []


async def test_flow_step_conditions_are_refused_outside_flows(gql: GQL) -> None:
    condition = {"engagement": {"event": "OPENED", "flowStep": "welcome"}}
    out = data(
        await gql(
            "mutation($i: CreateSegmentInput!) { createSegment(input: $i) { segment { id } userErrors { field code } } }",
            {"i": {"name": "Openers", "filter": condition}},
        )
    )["createSegment"]
    assert out == {
        "segment": None,
        "userErrors": [{"field": "filter.engagement.flowStep", "code": "INVALID_FILTER"}],
    }
    body = await gql(
        "query($f: SubscriberFilterInput!) { subscribers(filter: $f) { totalCount } }", {"f": condition}
    )
    assert body["errors"][0]["extensions"]["code"] == "INVALID_FILTER"


async def test_a_missing_flow_is_flow_not_found(gql: GQL) -> None:
    missing = to_global_id("Flow", 987_654)
    for document, name, extra in (
        (UPDATE_FLOW, "updateFlow", {"name": "x"}),
        (UPDATE_FLOW, "updateFlow", {"steps": [{"key": "a", "type": "EXIT"}]}),
        (PUBLISH_FLOW, "publishFlow", {}),
        (PAUSE_FLOW, "pauseFlow", {}),
        (RESUME_FLOW, "resumeFlow", {}),
        (ARCHIVE_FLOW, "archiveFlow", {}),
    ):
        out = data(await gql(document, {"i": {"id": missing, **extra}}))[name]
        assert (out["flow"], errors_of(out)) == (None, [("id", "FLOW_NOT_FOUND")]), name
    assert data(await gql(FLOW, {"id": missing}))["flow"] is None


# --- publishing and versions ------------------------------------------------------------------------------


async def test_publishing_makes_a_version_and_an_edit_waits_for_the_next(
    gql: GQL, db: Database, content: Content
) -> None:
    flow = await published_flow(gql, welcome_series(content))
    assert (flow["status"], flow["version"], flow["hasUnpublishedChanges"]) == ("ACTIVE", 1, False)

    steps = [*welcome_series(content)["steps"][:1], {"key": "bye", "type": "EXIT"}]
    steps[0] = {**steps[0], "next": "bye"}
    edited = data(await gql(UPDATE_FLOW, {"i": {"id": flow["id"], "steps": steps}}))["updateFlow"]["flow"]
    # People go on entering the published version; the draft holds the edit.
    assert (edited["status"], edited["version"], edited["hasUnpublishedChanges"]) == ("ACTIVE", 1, True)
    assert keys(edited) == ["welcome", "wait", "opened", "tag", "reminder"]
    assert [s["key"] for s in edited["draft"]["steps"]] == ["welcome", "bye"]

    again = data(await gql(PUBLISH_FLOW, {"i": {"id": flow["id"]}}))["publishFlow"]
    assert again["userErrors"] == []
    assert (again["flow"]["version"], again["flow"]["hasUnpublishedChanges"]) == (2, False)
    assert keys(again["flow"]) == ["welcome", "bye"]


async def test_people_inside_stay_on_their_version_unless_a_mapping_moves_them(
    gql: GQL, db: Database, content: Content
) -> None:
    flow = await published_flow(gql, welcome_series(content))
    ada = await make_subscriber(gql, "ada@example.com")
    bob = await make_subscriber(gql, "bob@example.com")
    waiting = await insert_run(db, pk(flow["id"]), pk(ada["id"]), step_key="wait", due_at=utcnow())
    sending = await insert_run(db, pk(flow["id"]), pk(bob["id"]), step_key="welcome")

    steps = welcome_series(content)["steps"]
    steps[1] = {"key": "pause", "type": "WAIT", "next": "opened", "waitSeconds": 3600}
    steps[0] = {**steps[0], "next": "pause"}
    await gql(UPDATE_FLOW, {"i": {"id": flow["id"], "steps": steps}})
    refused = data(
        await gql(PUBLISH_FLOW, {"i": {"id": flow["id"], "stepMapping": [{"from": "wait", "to": "nowhere"}]}})
    )["publishFlow"]
    assert errors_of(refused) == [("stepMapping[0].to", "UNKNOWN_STEP")]
    out = data(
        await gql(PUBLISH_FLOW, {"i": {"id": flow["id"], "stepMapping": [{"from": "wait", "to": "pause"}]}})
    )
    assert out["publishFlow"]["userErrors"] == []

    query = "query($id: ID!) { node(id: $id) { ... on FlowRun { version currentStep { key type waitSeconds } } } }"
    moved = data(await gql(query, {"id": to_global_id("FlowRun", waiting)}))["node"]
    assert moved == {"version": 2, "currentStep": {"key": "pause", "type": "WAIT", "waitSeconds": 3600}}
    stayed = data(await gql(query, {"id": to_global_id("FlowRun", sending)}))["node"]
    assert stayed == {"version": 1, "currentStep": {"key": "welcome", "type": "SEND", "waitSeconds": None}}


# --- pause, resume, archive -------------------------------------------------------------------------------


async def test_pause_resume_archive_round_trip(gql: GQL, db: Database, content: Content) -> None:
    made = (await create_flow(gql, welcome_series(content)))["flow"]
    fid = made["id"]

    async def move(document: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = data(await gql(document, {"i": {"id": fid}}))[name]
        return out

    assert errors_of(await move(PAUSE_FLOW, "pauseFlow")) == [("id", "INVALID_STATE")]
    await gql(PUBLISH_FLOW, {"i": {"id": fid}})
    assert (await move(PAUSE_FLOW, "pauseFlow"))["flow"]["status"] == "PAUSED"
    assert errors_of(await move(PAUSE_FLOW, "pauseFlow")) == [("id", "INVALID_STATE")]
    # Publishing a paused flow keeps it paused.
    published = await move(PUBLISH_FLOW, "publishFlow")
    assert (published["flow"]["status"], published["flow"]["version"]) == ("PAUSED", 2)
    assert (await move(RESUME_FLOW, "resumeFlow"))["flow"]["status"] == "ACTIVE"
    assert errors_of(await move(RESUME_FLOW, "resumeFlow")) == [("id", "INVALID_STATE")]

    ada = await make_subscriber(gql, "ada@example.com")
    bob = await make_subscriber(gql, "bob@example.com")
    inside = await insert_run(
        db, pk(fid), pk(ada["id"]), step_key="wait", due_at=utcnow() + timedelta(days=1)
    )
    done = await insert_run(db, pk(fid), pk(bob["id"]), step_key=None, status=FlowRunStatus.COMPLETED)

    archived = await move(ARCHIVE_FLOW, "archiveFlow")
    assert archived["flow"]["status"] == "ARCHIVED"
    assert archived["flow"]["stats"] == {"entered": 2, "active": 0, "completed": 1, "exited": 1}
    query = "query($id: ID!) { node(id: $id) { ... on FlowRun { status exitReason finishedAt dueAt } } }"
    ended = data(await gql(query, {"id": to_global_id("FlowRun", inside)}))["node"]
    assert (ended["status"], ended["exitReason"], ended["dueAt"]) == ("EXITED", "flow_archived", None)
    assert ended["finishedAt"] is not None
    untouched = data(await gql(query, {"id": to_global_id("FlowRun", done)}))["node"]
    assert (untouched["status"], untouched["exitReason"]) == ("COMPLETED", None)

    for document, name, extra in (
        (ARCHIVE_FLOW, "archiveFlow", {}),
        (RESUME_FLOW, "resumeFlow", {}),
        (PUBLISH_FLOW, "publishFlow", {}),
        (UPDATE_FLOW, "updateFlow", {"name": "again"}),
    ):
        out = data(await gql(document, {"i": {"id": fid, **extra}}))[name]
        assert errors_of(out) == [("id", "INVALID_STATE")], name


async def test_a_draft_can_be_archived(gql: GQL, content: Content) -> None:
    fid = (await create_flow(gql, welcome_series(content)))["flow"]["id"]
    out = data(await gql(ARCHIVE_FLOW, {"i": {"id": fid}}))["archiveFlow"]
    assert (out["flow"]["status"], out["userErrors"]) == ("ARCHIVED", [])


# --- runs, their ledger, and a subscriber's runs ----------------------------------------------------------

RUNS = """query($id: ID!, $first: Int!, $after: String, $status: FlowRunStatus) {
  flow(id: $id) { runs(first: $first, after: $after, status: $status) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id status enteredAt finishedAt exitReason dueAt version
      flow { id } subscriber { email } currentStep { key type }
      history { stepKey visit status detail attempts startedAt finishedAt openedAt clickedAt
        delivery { id status } } } } } } }"""


async def test_runs_with_their_history_newest_first(gql: GQL, db: Database, content: Content) -> None:
    flow = await published_flow(gql, welcome_series(content))
    fid = pk(flow["id"])
    people = [await make_subscriber(gql, f"p{i}@example.com") for i in range(3)]
    async with db.transaction() as session:
        delivery = Delivery(
            subscriber_id=pk(people[0]["id"]),
            email="p0@example.com",
            status=DeliveryStatus.SENT,
            sent_at=utcnow(),
        )
        session.add(delivery)
        await session.flush()
        delivery_id = delivery.id
    first = await insert_run(
        db,
        fid,
        pk(people[0]["id"]),
        step_key="wait",
        due_at=utcnow() + timedelta(hours=1),
        history=[("welcome", FlowStepRunStatus.SENT, delivery_id), ("wait", FlowStepRunStatus.PENDING, None)],
    )
    second = await insert_run(db, fid, pk(people[1]["id"]), step_key=None, status=FlowRunStatus.COMPLETED)
    third = await insert_run(
        db, fid, pk(people[2]["id"]), history=[("welcome", FlowStepRunStatus.SKIPPED, None)]
    )

    page = data(await gql(RUNS, {"id": flow["id"], "first": 2}))["flow"]["runs"]
    assert page["totalCount"] == 3 and page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in page["edges"]] == [
        to_global_id("FlowRun", third),
        to_global_id("FlowRun", second),
    ]
    rest = data(await gql(RUNS, {"id": flow["id"], "first": 2, "after": page["pageInfo"]["endCursor"]}))
    (edge,) = rest["flow"]["runs"]["edges"]
    run = edge["node"]
    assert run["id"] == to_global_id("FlowRun", first)
    assert (run["status"], run["version"], run["flow"], run["subscriber"]) == (
        "ACTIVE",
        1,
        {"id": flow["id"]},
        {"email": "p0@example.com"},
    )
    assert run["currentStep"] == {"key": "wait", "type": "WAIT"} and run["dueAt"] is not None
    assert [(h["stepKey"], h["visit"], h["status"], h["detail"]) for h in run["history"]] == [
        ("welcome", 1, "SENT", "visit 1"),
        ("wait", 2, "PENDING", "visit 2"),
    ]
    assert run["history"][0]["delivery"] == {"id": to_global_id("Delivery", delivery_id), "status": "SENT"}
    assert run["history"][1]["delivery"] is None

    completed = data(await gql(RUNS, {"id": flow["id"], "first": 10, "status": "COMPLETED"}))["flow"]["runs"]
    assert completed["totalCount"] == 1
    assert completed["edges"][0]["node"]["id"] == to_global_id("FlowRun", second)
    assert completed["edges"][0]["node"]["currentStep"] is None


async def test_subscriber_flow_runs_and_an_erased_person(gql: GQL, db: Database, content: Content) -> None:
    flow = await published_flow(gql, welcome_series(content))
    other = await published_flow(gql, {**welcome_series(content), "name": "Other"})
    ada = await make_subscriber(gql, "ada@example.com")
    bob = await make_subscriber(gql, "bob@example.com")
    in_first = await insert_run(db, pk(flow["id"]), pk(ada["id"]))
    in_other = await insert_run(db, pk(other["id"]), pk(ada["id"]), step_key="tag")
    bobs = await insert_run(db, pk(flow["id"]), pk(bob["id"]))
    query = """query($id: ID!) { subscriber(id: $id) { flowRuns(first: 10) { totalCount
      edges { node { id flow { name } currentStep { key } } } } } }"""
    runs = data(await gql(query, {"id": ada["id"]}))["subscriber"]["flowRuns"]
    assert runs["totalCount"] == 2
    assert [e["node"] for e in runs["edges"]] == [
        {"id": to_global_id("FlowRun", in_other), "flow": {"name": "Other"}, "currentStep": {"key": "tag"}},
        {
            "id": to_global_id("FlowRun", in_first),
            "flow": {"name": "Welcome series"},
            "currentStep": {"key": "welcome"},
        },
    ]

    erase = "mutation($i: EraseSubscriberInput!) { eraseSubscriber(input: $i) { userErrors { code } } }"
    assert data(await gql(erase, {"i": {"id": bob["id"]}}))["eraseSubscriber"]["userErrors"] == []
    node = "query($id: ID!) { node(id: $id) { ... on FlowRun { subscriber { email } status } } }"
    assert data(await gql(node, {"id": to_global_id("FlowRun", bobs)}))["node"]["subscriber"] is None


async def test_step_stats_come_from_the_counters(gql: GQL, db: Database, content: Content) -> None:
    flow = await published_flow(gql, welcome_series(content))
    async with db.transaction() as session:
        session.add(
            FlowStepStats(
                flow_id=pk(flow["id"]),
                step_key="welcome",
                entered=5,
                completed=4,
                sent=3,
                skipped=1,
                failed=1,
                opened=2,
                clicked=1,
            )
        )
    query = "query($id: ID!) { flow(id: $id) { steps { key stats { entered completed sent skipped failed opened clicked } } } }"
    steps = data(await gql(query, {"id": flow["id"]}))["flow"]["steps"]
    assert steps[0]["stats"] == {
        "entered": 5,
        "completed": 4,
        "sent": 3,
        "skipped": 1,
        "failed": 1,
        "opened": 2,
        "clicked": 1,
    }
    assert steps[1]["stats"] == dict.fromkeys(steps[0]["stats"], 0)


async def test_a_page_of_flows_reads_its_relations_in_batches(
    gql: GQL, db: Database, content: Content
) -> None:
    """The statements a page of flows with their steps, stats and runs costs do not grow with the flows."""
    query = """{ flows(first: 10) { edges { node { name hasUnpublishedChanges trigger { list { name } }
      steps { key template { name } addLists { name } stats { sent } }
      runs(first: 5) { totalCount edges { node { subscriber { email } currentStep { key } version
        history { stepKey delivery { id } } } } } } } } }"""

    async def statements_for(n: int) -> int:
        for i in range(n):
            flow = await published_flow(gql, {**welcome_series(content), "name": f"Flow {i}"})
            person = await make_subscriber(gql, f"{uuid.uuid4().hex[:8]}@example.com")
            await insert_run(
                db, pk(flow["id"]), pk(person["id"]), history=[("welcome", FlowStepRunStatus.SENT, None)]
            )
        with recorded_statements(db) as statements:
            data(await gql(query))
        return len([s for s in statements if s.lstrip().upper().startswith("SELECT")])

    few = await statements_for(2)
    many = await statements_for(3)
    assert many == few


# --- roles ------------------------------------------------------------------------------------------------


async def test_a_viewer_reads_flows_and_changes_none(gql: GQL, db: Database, content: Content) -> None:
    fid = (await create_flow(gql, welcome_series(content)))["flow"]["id"]
    viewer = await make_key(db, Role.VIEWER, "viewer")
    assert data(await gql(FLOW, {"id": fid}, key=viewer))["flow"]["id"] == fid
    for document, values in (
        (CREATE_FLOW, welcome_series(content)),
        (UPDATE_FLOW, {"id": fid, "name": "x"}),
        (PUBLISH_FLOW, {"id": fid}),
        (PAUSE_FLOW, {"id": fid}),
        (RESUME_FLOW, {"id": fid}),
        (ARCHIVE_FLOW, {"id": fid}),
    ):
        body = await gql(document, {"i": values}, key=viewer)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", document
    assert await flows_total(gql) == 1
    assert data(await gql(FLOW, {"id": fid}))["flow"]["status"] == "DRAFT"


@pytest.fixture
def public_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks.example.com resolves to a public address, without a DNS server."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    monkeypatch.setattr(destinations, "resolve", resolve)


async def test_webhook_steps_need_an_admin_key(
    gql: GQL, db: Database, content: Content, public_names: None
) -> None:
    editor = await make_key(db, Role.EDITOR, "editor")
    steps = [{"key": "hook", "type": "WEBHOOK", "url": "https://hooks.example.com/in"}]
    values = {**welcome_series(content), "steps": steps}
    refused = await create_flow(gql, values, key=editor)
    assert (refused["flow"], errors_of(refused)) == (None, [("steps[0].type", "FORBIDDEN")])
    made = await create_flow(gql, {**welcome_series(content)}, key=editor)
    assert made["userErrors"] == []
    out = data(await gql(UPDATE_FLOW, {"i": {"id": made["flow"]["id"], "steps": steps}}, key=editor))[
        "updateFlow"
    ]
    assert errors_of(out) == [("steps[0].type", "FORBIDDEN")]
    admin_made = await create_flow(gql, values)
    assert admin_made["userErrors"] == []
    assert admin_made["flow"]["steps"][0]["url"] == "https://hooks.example.com/in"
    private = await create_flow(gql, {**values, "steps": [{**steps[0], "url": "http://127.0.0.1:9/in"}]})
    assert errors_of(private) == [("steps[0].url", "DESTINATION_REFUSED")]


# --- live flowStats over a real WebSocket -----------------------------------------------------------------


@pytest.fixture
def live_runtime(db: Database, live_pubsub: PubSub) -> Runtime:
    return Runtime(db=db, secret_key=TEST_SECRET, public_url="http://127.0.0.1", pubsub=live_pubsub)


@pytest.fixture
async def server(db: Database, live_runtime: Runtime) -> AsyncIterator[str]:
    settings = Settings(  # type: ignore[arg-type]
        database_url=db.url, secret_key=TEST_SECRET, public_url="http://127.0.0.1", webhook_verify=False
    )
    async with live_server(create_app(settings, live_runtime)) as address:
        yield address


STATS = """subscription($id: ID!) { flowStats(id: $id) { flowId stats { entered active completed exited }
  steps { key stats { entered completed sent skipped failed opened clicked } } } }"""


async def subscribe(ws: ClientConnection, key: str, flow_id: str) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    payload = {"query": STATS, "variables": {"id": flow_id}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))


async def next_update(ws: ClientConnection, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first update satisfying `until` (announcements are coalesced: intermediate values may be skipped)."""
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            update_: dict[str, Any] = message["payload"]["data"]["flowStats"]
            if until(update_):
                return update_


async def test_flow_stats_are_pushed_when_the_counters_change(
    server: str, db: Database, admin_key: str, gql: GQL, content: Content, live_runtime: Runtime
) -> None:
    flow = await published_flow(gql, welcome_series(content))
    fid = pk(flow["id"])
    async with connect(f"ws://{server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await subscribe(ws, admin_key, flow["id"])
        current = await next_update(ws, lambda u: True)
        assert current["flowId"] == flow["id"]
        assert current["stats"] == {"entered": 0, "active": 0, "completed": 0, "exited": 0}
        assert [s["key"] for s in current["steps"]] == ["welcome", "wait", "opened", "tag", "reminder"]

        async with db.transaction() as session:
            await session.execute(update(FlowRow).where(FlowRow.id == fid).values(entered=3, completed=3))
            session.add(FlowStepStats(flow_id=fid, step_key="welcome", entered=3, completed=3, sent=3))
            # A step of an older version that still has counters is shown after the current ones.
            session.add(FlowStepStats(flow_id=fid, step_key="old", entered=1, completed=1))
        await publish_flow_stats(live_runtime.live, [fid])
        pushed = await next_update(ws, lambda u: u["stats"]["entered"] == 3)
        assert pushed["stats"] == {"entered": 3, "active": 0, "completed": 3, "exited": 0}
        steps = {s["key"]: s["stats"] for s in pushed["steps"]}
        assert [s["key"] for s in pushed["steps"]] == ["welcome", "wait", "opened", "tag", "reminder", "old"]
        assert (steps["welcome"]["sent"], steps["wait"]["entered"], steps["old"]["completed"]) == (3, 0, 1)

        # Counters go down too: archiving ends the runs inside, and archiveFlow (on the server that publishes
        # to this pub/sub) announces it.
        ada = await make_subscriber(gql, "ada@example.com")
        await insert_run(db, fid, pk(ada["id"]), step_key="wait")
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            archive = await graphql_runner(http, admin_key)(ARCHIVE_FLOW, {"i": {"id": flow["id"]}})
        assert data(archive)["archiveFlow"]["userErrors"] == []
        archived = await next_update(ws, lambda u: u["stats"]["exited"] == 1)
        assert archived["stats"] == {"entered": 4, "active": 0, "completed": 3, "exited": 1}
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
    async with db.session() as session:
        assert (
            await session.execute(select(FlowRun.status).where(FlowRun.flow_id == fid))
        ).scalars().all() == [FlowRunStatus.EXITED]


async def test_flow_stats_of_an_unknown_flow(server: str, admin_key: str) -> None:
    async with connect(f"ws://{server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await subscribe(ws, admin_key, to_global_id("Flow", 424242))
        message = json.loads(await ws.recv())
    assert message["type"] == "next"
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
