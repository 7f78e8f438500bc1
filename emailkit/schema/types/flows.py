"""Automation flows: the Flow type with its definition (trigger, steps, re-entry, exit condition) and counters,
each person's FlowRun through one, and the ledger of a run (FlowStepRun).

A definition is stored as its JSON form (see emailkit.domain.automation.definition); the types here are views of
it, parsed once per request and version, with internal ids turned back into global IDs and objects.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, time
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.automation import Flow as FlowRow
from emailkit.db.tables.automation import (
    FlowReentry,
    FlowRunStatus,
    FlowStatus,
    FlowStepRunStatus,
    FlowTriggerType,
)
from emailkit.db.tables.automation import FlowRun as FlowRunRow
from emailkit.db.tables.automation import FlowStepRun as FlowStepRunRow
from emailkit.domain.audience.segments.filter import SubscriberFilter, filter_to_dict
from emailkit.domain.automation.definition import (
    Definition,
    Step,
    StepType,
    Trigger,
    Window,
    parse_definition,
)
from emailkit.domain.automation.live import FlowStatsSnapshot, StepCounters
from emailkit.domain.automation.webhook_step import flow_webhook_secret
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.permissions import IsAdmin
from emailkit.schema.relay import Connection, Node, to_global_id
from emailkit.schema.types.campaigns import CampaignType
from emailkit.schema.types.deliveries import DeliveryType
from emailkit.schema.types.filters import filter_for_api
from emailkit.schema.types.lists import MailingListType
from emailkit.schema.types.segments import SegmentType
from emailkit.schema.types.subscribers import SubscriberType
from emailkit.schema.types.templates import TemplateType

strawberry.enum(
    FlowStatus,
    name="FlowStatus",
    description="DRAFT until the first publish; ACTIVE: people enter and go on; PAUSED: nobody enters and nobody "
    "goes on (waits keep their due time); ARCHIVED: for good, every run still inside has left.",
)
strawberry.enum(FlowTriggerType, name="FlowTriggerType", description="What makes a person enter a flow.")
strawberry.enum(
    FlowReentry,
    name="FlowReentry",
    description="Whether a person may enter again: ONCE ever (default), ALWAYS, or AFTER_SECONDS since their "
    "last entry (reentrySeconds).",
)
strawberry.enum(
    FlowRunStatus,
    name="FlowRunStatus",
    description="ACTIVE: inside the flow (due now, or waiting until dueAt); COMPLETED: went through to the end; "
    "EXITED: left early (see exitReason).",
)
strawberry.enum(
    FlowStepRunStatus,
    name="FlowStepRunStatus",
    description="PENDING: a message queued (or held by the frequency cap), a webhook being retried; SENDING: "
    "being handed over; DONE: a step without a message finished; SENT; SKIPPED and FAILED (see detail); "
    "IN_DOUBT: the worker stopped while handing the message over: never sent again, never counted as sent.",
)


class FlowStepKind(enum.StrEnum):
    """The domain's step types (emailkit.domain.automation.definition.StepType) as a GraphQL enum."""

    SEND = StepType.SEND
    WAIT = StepType.WAIT
    BRANCH = StepType.BRANCH
    UPDATE = StepType.UPDATE
    WEBHOOK = StepType.WEBHOOK
    EXIT = StepType.EXIT


strawberry.enum(
    FlowStepKind,
    name="FlowStepType",
    description="SEND a template; WAIT a duration or until a weekday/time window; BRANCH on a condition; "
    "UPDATE attributes and lists; WEBHOOK: a signed POST; EXIT the flow.",
)

# Parsed definitions of published versions, per request (a version never changes once published).
_VERSIONS = "flow_versions"


def _hh_mm(value: time | None) -> str | None:
    return value.strftime("%H:%M") if value is not None else None


def _filter_json(f: SubscriberFilter | None) -> JSON | None:
    return JSON(filter_for_api(filter_to_dict(f))) if f is not None else None


async def version_definition(info: Info, version_pk: int) -> Definition:
    """A published version's definition, read and parsed once per request."""
    parsed: dict[int, Definition] = info.context.extra.setdefault(_VERSIONS, {})
    found = parsed.get(version_pk)
    if found is None:
        row = await info.context.loaders.flow_version_by_id.load(version_pk)
        if row is None:
            raise GraphQLError("The flow's version was not found", extensions={"code": "NOT_FOUND"})
        found = parsed[version_pk] = parse_definition(row.definition)
    return found


# --- counters ---------------------------------------------------------------------------------------------


@strawberry.type(name="FlowStats", description="How many people entered a flow and where they are now.")
class FlowStatsType:
    entered: int = strawberry.field(description="Runs started (a person entering again counts again).")
    active: int = strawberry.field(description="Runs inside the flow now.")
    completed: int = strawberry.field(description="Runs that went through to the end.")
    exited: int = strawberry.field(
        description="Runs that left early (exit condition, EXIT step, unsubscribe...)."
    )


@strawberry.type(
    name="FlowStepStats",
    description="One step's counters, across the flow's versions (a step key keeps its meaning).",
)
class FlowStepStatsType:
    entered: int
    completed: int
    sent: int = strawberry.field(description="Messages sent (SEND steps).")
    skipped: int = strawberry.field(description="Skipped: suppressed, unsubscribed, erased...")
    failed: int
    opened: int = strawberry.field(description="Runs whose message of this step was opened (unique).")
    clicked: int = strawberry.field(description="Runs whose message of this step was clicked (unique).")

    @classmethod
    def of(cls, c: StepCounters) -> FlowStepStatsType:
        return cls(
            entered=c.entered,
            completed=c.completed,
            sent=c.sent,
            skipped=c.skipped,
            failed=c.failed,
            opened=c.opened,
            clicked=c.clicked,
        )


@strawberry.type(name="FlowStepCounters", description="A step's counters, by step key.")
class FlowStepCountersType:
    key: str
    stats: FlowStepStatsType


@strawberry.type(
    name="FlowStatsUpdate",
    description="A flow's counters and its steps' (those of the version people enter on, then steps of older "
    "versions that still have counters), as flowStats pushes them.",
)
class FlowStatsUpdate:
    flow_id: strawberry.ID
    stats: FlowStatsType
    steps: list[FlowStepCountersType]

    @classmethod
    def of(cls, s: FlowStatsSnapshot) -> FlowStatsUpdate:
        return cls(
            flow_id=to_global_id("Flow", s.flow_id),
            stats=FlowStatsType(entered=s.entered, active=s.active, completed=s.completed, exited=s.exited),
            steps=[FlowStepCountersType(key=c.key, stats=FlowStepStatsType.of(c)) for c in s.steps],
        )


# --- the definition ---------------------------------------------------------------------------------------


@strawberry.type(
    name="FlowTrigger", description="What makes a person enter the flow; the fields its type uses."
)
class FlowTriggerView:
    list_pk: strawberry.Private[int | None]
    segment_pk: strawberry.Private[int | None]
    campaign_pk: strawberry.Private[int | None]
    type: FlowTriggerType
    event_name: str | None = strawberry.field(description="EVENT: the custom event's name.")
    attribute: str | None = strawberry.field(description="DATE_ATTRIBUTE: the date attribute's name.")
    link_url: str | None = strawberry.field(description="ENGAGED: a link of the campaign.")
    time_of_day: str | None = strawberry.field(
        description="DATE_ATTRIBUTE: the person's local time (HH:MM) the anniversary run starts at."
    )

    @strawberry.field(name="list", description="SUBSCRIBED: the list; null once deleted.")
    async def mailing_list(self, info: Info) -> MailingListType | None:
        return await load_one(info.context.loaders.list_by_id, self.list_pk, MailingListType.from_model)

    @strawberry.field(description="SEGMENT_ENTERED: the saved segment; null once deleted.")
    async def segment(self, info: Info) -> SegmentType | None:
        return await load_one(info.context.loaders.segment_by_id, self.segment_pk, SegmentType.from_model)

    @strawberry.field(description="ENGAGED: the campaign; null once deleted.")
    async def campaign(self, info: Info) -> CampaignType | None:
        return await load_one(info.context.loaders.campaign_by_id, self.campaign_pk, CampaignType.from_model)

    @classmethod
    def of(cls, t: Trigger) -> FlowTriggerView:
        return cls(
            list_pk=t.list_id,
            segment_pk=t.segment_id,
            campaign_pk=t.campaign_id,
            type=t.type,
            event_name=t.event_name,
            attribute=t.attribute,
            link_url=t.link_url,
            time_of_day=_hh_mm(t.time_of_day),
        )


@strawberry.type(
    name="FlowWindow",
    description="A WAIT until the person's local clock is inside this window (their timezone).",
)
class FlowWindowView:
    weekdays: list[int] = strawberry.field(description="1 = Monday … 7 = Sunday.")
    start: str = strawberry.field(description="HH:MM")
    end: str = strawberry.field(description="HH:MM")

    @classmethod
    def of(cls, w: Window) -> FlowWindowView:
        return cls(weekdays=list(w.weekdays), start=w.start.strftime("%H:%M"), end=w.end.strftime("%H:%M"))


async def _lists(info: Info, pks: Sequence[int]) -> list[MailingListType]:
    rows = await info.context.loaders.list_by_id.load_many(list(pks))
    return [MailingListType.from_model(r) for r in rows if r is not None]


@strawberry.type(name="FlowStep", description="One step of a flow; the fields its type uses.")
class FlowStepView:
    flow_pk: strawberry.Private[int]
    template_pk: strawberry.Private[int | None]
    add_list_pks: strawberry.Private[tuple[int, ...]]
    remove_list_pks: strawberry.Private[tuple[int, ...]]
    key: str
    type: FlowStepKind
    next: str | None = strawberry.field(description="The step after this one; null: the run completes here.")
    subject: str | None = strawberry.field(description="SEND: the subject; null: the template's own.")
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    track_opens: bool
    track_clicks: bool
    wait_seconds: int | None = strawberry.field(description="WAIT: how long.")
    window: FlowWindowView | None = strawberry.field(
        description="WAIT: until the person's local time is in it."
    )
    condition: JSON | None = strawberry.field(
        description="BRANCH: the SubscriberFilterInput, reusable as input."
    )
    then: str | None = strawberry.field(description="BRANCH: the step for people matching the condition.")
    otherwise: str | None = strawberry.field(description="BRANCH: the step for the others.")
    set_attributes: JSON = strawberry.field(description="UPDATE: attributes set on the person.")
    url: str | None = strawberry.field(description="WEBHOOK: where the signed POST goes.")
    sender_id: strawberry.ID | None = strawberry.field(
        description="SEND: the sender it goes through; null: the default sender."
    )

    @strawberry.field(description="SEND: the template; null once deleted.")
    async def template(self, info: Info) -> TemplateType | None:
        return await load_one(info.context.loaders.template_by_id, self.template_pk, TemplateType.from_model)

    @strawberry.field(description="UPDATE: lists the person is added to.")
    async def add_lists(self, info: Info) -> list[MailingListType]:
        return await _lists(info, self.add_list_pks)

    @strawberry.field(description="UPDATE: lists the person is removed from.")
    async def remove_lists(self, info: Info) -> list[MailingListType]:
        return await _lists(info, self.remove_list_pks)

    @strawberry.field(description="This step's counters, across the flow's versions.")
    async def stats(self, info: Info) -> FlowStepStatsType:
        rows = await info.context.loaders.flow_step_stats.load(self.flow_pk)
        row = rows.get(self.key)
        return FlowStepStatsType.of(StepCounters.of(row) if row is not None else StepCounters(self.key))

    @classmethod
    def of(cls, flow_pk: int, s: Step) -> FlowStepView:
        return cls(
            flow_pk=flow_pk,
            template_pk=s.template_id,
            add_list_pks=s.add_list_ids,
            remove_list_pks=s.remove_list_ids,
            key=s.key,
            type=FlowStepKind(s.type),
            next=s.next,
            subject=s.subject,
            from_email=s.from_email,
            from_name=s.from_name,
            reply_to=s.reply_to,
            track_opens=s.track_opens,
            track_clicks=s.track_clicks,
            wait_seconds=s.wait_seconds,
            window=FlowWindowView.of(s.window) if s.window is not None else None,
            condition=_filter_json(s.condition),
            then=s.then,
            otherwise=s.otherwise,
            set_attributes=JSON(dict(s.set_attributes)),
            url=s.url,
            sender_id=to_global_id("Sender", s.sender_id) if s.sender_id is not None else None,
        )


@strawberry.type(
    name="FlowDefinition", description="A flow's trigger, steps, re-entry policy and exit condition."
)
class FlowDefinitionView:
    trigger: FlowTriggerView
    steps: list[FlowStepView] = strawberry.field(description="In the order given; people enter at the first.")
    reentry: FlowReentry
    reentry_seconds: int | None
    exit_when: JSON | None = strawberry.field(
        description="A person who starts matching this SubscriberFilterInput leaves the flow."
    )

    @classmethod
    def of(cls, flow_pk: int, d: Definition) -> FlowDefinitionView:
        return cls(
            trigger=FlowTriggerView.of(d.trigger),
            steps=[FlowStepView.of(flow_pk, s) for s in d.steps],
            reentry=d.reentry,
            reentry_seconds=d.reentry_seconds,
            exit_when=_filter_json(d.exit_when),
        )


# --- flows ------------------------------------------------------------------------------------------------


async def flow_runs(
    root: FlowType,
    info: Info,
    first: int = 50,
    after: str | None = None,
    status: FlowRunStatus | None = None,
) -> Connection[FlowRunType]:
    """The flow's runs, newest first, optionally only those in one status."""
    loaders = info.context.loaders
    return await info.context.child_connection(
        loaders.flow_run_page, loaders.flow_run_count, root.pk, FlowRunType.from_model, first, after, status
    )


@strawberry.type(
    name="Flow",
    description="An automation: people enter on its trigger and go through its steps, each step at most once "
    "per visit. Its trigger, steps, reentry and exitWhen are those of the version people enter on (the draft's "
    "before the first publish); `draft` holds the definition being edited.",
)
class FlowType(Node):
    pk: strawberry.Private[int]
    version_pk: strawberry.Private[int | None]
    draft_json: strawberry.Private[dict[str, Any]]
    name: str
    status: FlowStatus
    version: int = strawberry.field(description="The published version people enter on; 0 before the first.")
    stats: FlowStatsType
    created_at: datetime
    updated_at: datetime

    async def _shown(self, info: Info) -> Definition:
        if self.version_pk is None:
            return parse_definition(self.draft_json)
        return await version_definition(info, self.version_pk)

    @strawberry.field(
        description=(
            "The secret this flow's WEBHOOK steps sign with (Standard Webhooks, `whsec_…`): verify "
            "`webhook-signature` with it. ADMIN keys only."
        ),
        permission_classes=[IsAdmin],
    )
    def webhook_secret(self, info: Info) -> str:
        return flow_webhook_secret(info.context.runtime.secret_key, self.pk)

    @strawberry.field(
        description="The draft differs from the published version (always true before the first publish)."
    )
    async def has_unpublished_changes(self, info: Info) -> bool:
        if self.version_pk is None:
            return True
        row = await info.context.loaders.flow_version_by_id.load(self.version_pk)
        return row is None or row.definition != self.draft_json

    @strawberry.field
    async def trigger(self, info: Info) -> FlowTriggerView:
        return FlowTriggerView.of((await self._shown(info)).trigger)

    @strawberry.field(description="In the order given; people enter at the first.")
    async def steps(self, info: Info) -> list[FlowStepView]:
        return [FlowStepView.of(self.pk, s) for s in (await self._shown(info)).steps]

    @strawberry.field
    async def reentry(self, info: Info) -> FlowReentry:
        return (await self._shown(info)).reentry

    @strawberry.field(description="AFTER_SECONDS: how long after their last entry a person may enter again.")
    async def reentry_seconds(self, info: Info) -> int | None:
        return (await self._shown(info)).reentry_seconds

    @strawberry.field(description="A person who starts matching this SubscriberFilterInput leaves the flow.")
    async def exit_when(self, info: Info) -> JSON | None:
        return _filter_json((await self._shown(info)).exit_when)

    @strawberry.field(
        description="The definition being edited; publishFlow makes it the version people enter on."
    )
    def draft(self) -> FlowDefinitionView:
        return FlowDefinitionView.of(self.pk, parse_definition(self.draft_json))

    runs: Connection[FlowRunType] = strawberry.field(resolver=flow_runs)

    @classmethod
    def from_model(cls, row: FlowRow) -> FlowType:
        return cls(
            id=to_global_id("Flow", row.id),
            pk=row.id,
            version_pk=row.version_id,
            draft_json=dict(row.draft),
            name=row.name,
            status=row.status,
            version=row.version,
            stats=FlowStatsType(
                entered=row.entered, active=row.active, completed=row.completed, exited=row.exited
            ),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


# --- runs and their ledger --------------------------------------------------------------------------------


@strawberry.type(
    name="FlowStepRun", description="One step a run executed (or is executing): the step ledger."
)
class FlowStepRunType:
    delivery_pk: strawberry.Private[int | None]
    step_key: str
    visit: int = strawberry.field(description="The ordinal of this step execution in the run (1, 2, ...).")
    status: FlowStepRunStatus
    detail: str | None = strawberry.field(
        description="Why it was skipped or failed, or which exit a branch took."
    )
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    opened_at: datetime | None = strawberry.field(description="SEND: first open of its message.")
    clicked_at: datetime | None = strawberry.field(description="SEND: first click in its message.")

    @strawberry.field(description="SEND: the message's delivery.")
    async def delivery(self, info: Info) -> DeliveryType | None:
        return await load_one(info.context.loaders.delivery_by_id, self.delivery_pk, DeliveryType.from_model)

    @classmethod
    def from_model(cls, row: FlowStepRunRow) -> FlowStepRunType:
        return cls(
            delivery_pk=row.delivery_id,
            step_key=row.step_key,
            visit=row.visit,
            status=row.status,
            detail=row.detail,
            attempts=row.attempts,
            started_at=row.started_at,
            finished_at=row.finished_at,
            opened_at=row.opened_at,
            clicked_at=row.clicked_at,
        )


@strawberry.type(
    name="FlowRun", description="One person's journey through one flow, on the version they entered on."
)
class FlowRunType(Node):
    pk: strawberry.Private[int]
    flow_pk: strawberry.Private[int]
    version_pk: strawberry.Private[int]
    subscriber_pk: strawberry.Private[int | None]
    step_key: strawberry.Private[str | None]
    status: FlowRunStatus
    entered_at: datetime
    finished_at: datetime | None
    exit_reason: str | None = strawberry.field(
        description="Why an EXITED run left, e.g. flow_archived (its flow was archived while it was inside)."
    )
    due_at: datetime | None = strawberry.field(
        description="When an ACTIVE run goes on (the end of its wait)."
    )

    @strawberry.field
    async def flow(self, info: Info) -> FlowType | None:
        return await load_one(info.context.loaders.flow_by_id, self.flow_pk, FlowType.from_model)

    @strawberry.field(description="The person; null once erased.")
    async def subscriber(self, info: Info) -> SubscriberType | None:
        return await load_one(
            info.context.loaders.subscriber_by_id, self.subscriber_pk, SubscriberType.from_model
        )

    @strawberry.field(description="The flow version the run goes through.")
    async def version(self, info: Info) -> int:
        row = await info.context.loaders.flow_version_by_id.load(self.version_pk)
        if row is None:
            raise GraphQLError("The flow's version was not found", extensions={"code": "NOT_FOUND"})
        return row.version

    @strawberry.field(description="The step the run is at, in its own version; null when it is at none.")
    async def current_step(self, info: Info) -> FlowStepView | None:
        if self.step_key is None:
            return None
        step = (await version_definition(info, self.version_pk)).step(self.step_key)
        return FlowStepView.of(self.flow_pk, step) if step is not None else None

    @strawberry.field(description="The steps it executed, in order (the step ledger).")
    async def history(self, info: Info) -> list[FlowStepRunType]:
        rows = await info.context.loaders.flow_run_history.load(self.pk)
        return [FlowStepRunType.from_model(r) for r in rows]

    @classmethod
    def from_model(cls, row: FlowRunRow) -> FlowRunType:
        return cls(
            id=to_global_id("FlowRun", row.id),
            pk=row.id,
            flow_pk=row.flow_id,
            version_pk=row.version_id,
            subscriber_pk=row.subscriber_id,
            step_key=row.step_key,
            status=row.status,
            entered_at=row.entered_at,
            finished_at=row.finished_at,
            exit_reason=row.exit_reason,
            due_at=row.due_at,
        )
