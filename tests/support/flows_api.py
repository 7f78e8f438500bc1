"""Flows in tests: the GraphQL documents, a welcome series to start from, and runs with their ledger written
straight into the database (as the runner would), for tests of what the API shows of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.tables.automation import Flow as FlowRow
from emailkit.db.tables.automation import FlowRun, FlowRunStatus, FlowStepRun, FlowStepRunStatus
from emailkit.db.types import utcnow
from tests.support.graphql import GQL, data

USER_ERRORS = "userErrors { field code message }"
STEP_FIELDS = """key type next subject fromEmail fromName replyTo trackOpens trackClicks waitSeconds
  window { weekdays start end } condition then otherwise setAttributes url
  template { id } addLists { id } removeLists { id }"""
DEFINITION_FIELDS = f"""trigger {{ type eventName attribute linkUrl timeOfDay list {{ id }} segment {{ id }}
  campaign {{ id }} }} steps {{ {STEP_FIELDS} }} reentry reentrySeconds exitWhen"""
FLOW_FIELDS = f"""id name status version hasUnpublishedChanges createdAt updatedAt
  stats {{ entered active completed exited }}
  {DEFINITION_FIELDS} draft {{ {DEFINITION_FIELDS} }}"""


def flow_mutation(name: str, input_type: str) -> str:
    return f"mutation($i: {input_type}!) {{ {name}(input: $i) {{ flow {{ {FLOW_FIELDS} }} {USER_ERRORS} }} }}"


CREATE_FLOW = flow_mutation("createFlow", "CreateFlowInput")
UPDATE_FLOW = flow_mutation("updateFlow", "UpdateFlowInput")
PUBLISH_FLOW = flow_mutation("publishFlow", "PublishFlowInput")
PAUSE_FLOW = flow_mutation("pauseFlow", "FlowIdInput")
RESUME_FLOW = flow_mutation("resumeFlow", "FlowIdInput")
ARCHIVE_FLOW = flow_mutation("archiveFlow", "FlowIdInput")
FLOW = f"query($id: ID!) {{ flow(id: $id) {{ {FLOW_FIELDS} }} }}"

CREATE_TEMPLATE = (
    "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } userErrors { code } } }"
)


@dataclass
class Content:
    """What a flow names, made through the API: global IDs."""

    template: str
    welcome_list: str
    customers_list: str


async def make_content(gql: GQL) -> Content:
    from tests.support.graphql import make_list

    template = data(
        await gql(
            CREATE_TEMPLATE,
            {
                "i": {
                    "name": "Welcome",
                    "kind": "CAMPAIGN",
                    "format": "HTML",
                    "subject": "Welcome, {{ subscriber.name }}",
                    "body": "<p>Hello</p>",
                }
            },
        )
    )["createTemplate"]
    assert template["userErrors"] == [], template
    return Content(
        template=template["template"]["id"],
        welcome_list=await make_list(gql, "Welcome"),
        customers_list=await make_list(gql, "Customers"),
    )


def welcome_series(c: Content) -> dict[str, Any]:
    """A CreateFlowInput: welcome mail, a day's wait, then a tag for those who opened it, a reminder for the
    others."""
    return {
        "name": "Welcome series",
        "trigger": {"type": "SUBSCRIBED", "listId": c.welcome_list},
        "steps": [
            {
                "key": "welcome",
                "type": "SEND",
                "next": "wait",
                "templateId": c.template,
                "subject": "Welcome!",
                "fromEmail": "hello@example.com",
                "fromName": "Shop",
            },
            {"key": "wait", "type": "WAIT", "next": "opened", "waitSeconds": 86400},
            {
                "key": "opened",
                "type": "BRANCH",
                "condition": {"engagement": {"event": "OPENED", "flowStep": "welcome"}},
                "then": "tag",
                "otherwise": "reminder",
            },
            {
                "key": "tag",
                "type": "UPDATE",
                "setAttributes": {"welcomed": True},
                "addListIds": [c.customers_list],
            },
            {
                "key": "reminder",
                "type": "SEND",
                "templateId": c.template,
                "fromEmail": "hello@example.com",
                "trackClicks": False,
            },
        ],
        "exitWhen": {"attribute": {"path": "bought", "op": "EQ", "value": True}},
    }


async def create_flow(gql: GQL, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """`createFlow`'s payload; the flow made must have no userErrors unless the caller looks at them."""
    out: dict[str, Any] = data(await gql(CREATE_FLOW, {"i": values}, **kw))["createFlow"]
    return out


async def published_flow(gql: GQL, values: dict[str, Any]) -> dict[str, Any]:
    made = await create_flow(gql, values)
    assert made["userErrors"] == [], made["userErrors"]
    out = data(await gql(PUBLISH_FLOW, {"i": {"id": made["flow"]["id"]}}))["publishFlow"]
    assert out["userErrors"] == [], out["userErrors"]
    flow: dict[str, Any] = out["flow"]
    return flow


def pk(global_id: str) -> int:
    parsed = globalid.parse(global_id)
    assert parsed is not None
    return parsed[1]


async def insert_run(
    db: Database,
    flow_id: int,
    subscriber_id: int | None,
    *,
    step_key: str | None = "welcome",
    status: FlowRunStatus = FlowRunStatus.ACTIVE,
    due_at: datetime | None = None,
    history: Sequence[tuple[str, FlowStepRunStatus, int | None]] = (),
    entry_key: str = "",
) -> int:
    """A run of the flow's current version at `step_key`, with ledger rows (step key, status, delivery id) in
    order, in the workspace in scope, counted in the flow's counters; returns its id."""
    async with db.transaction() as session:
        flow = await session.get(FlowRow, flow_id)
        assert flow is not None and flow.version_id is not None
        run = FlowRun(
            flow_id=flow_id,
            version_id=flow.version_id,
            subscriber_id=subscriber_id,
            status=status,
            step_key=step_key,
            visit=len(history) + 1,
            due_at=due_at,
            entry_key=entry_key,
            finished_at=None if status is FlowRunStatus.ACTIVE else utcnow(),
        )
        session.add(run)
        flow.entered += 1
        if status is FlowRunStatus.ACTIVE:
            flow.active += 1
        elif status is FlowRunStatus.COMPLETED:
            flow.completed += 1
        else:
            flow.exited += 1
        await session.flush()
        for visit, (key, step_status, delivery_id) in enumerate(history, start=1):
            session.add(
                FlowStepRun(
                    run_id=run.id,
                    flow_id=flow_id,
                    step_key=key,
                    visit=visit,
                    status=step_status,
                    delivery_id=delivery_id,
                    detail=f"visit {visit}",
                    finished_at=utcnow(),
                )
            )
        return run.id
