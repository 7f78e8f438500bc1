"""Mutations of automation flows: createFlow, updateFlow (the draft), publishFlow, pauseFlow, resumeFlow,
archiveFlow.

The inputs are typed; they become the domain's JSON form of a definition (camelCase keys, global IDs decoded to
the workspace's ids), which the domain checks whole before anything is saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from emailkit.db.tables.access import Role
from emailkit.db.tables.automation import Flow as FlowRow
from emailkit.db.tables.automation import FlowReentry, FlowTriggerType
from emailkit.domain.automation import flows
from emailkit.domain.automation.definition import (
    DEFAULT_TIME_OF_DAY,
    MAX_WAIT_SECONDS,
    MIN_WAIT_SECONDS,
    StepType,
    parse_definition,
)
from emailkit.domain.automation.live import publish_flow_stats
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.domain.sending_domains.policy import require_verified_from
from emailkit.domain.validation import raise_if
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id, decode_id_or_none
from emailkit.schema.types.filters import SubscriberFilterInput, filter_to_domain
from emailkit.schema.types.flows import FlowStepKind, FlowType

# Keys whose steps send subscriber data to any URL, as webhook endpoints do (which only ADMIN keys manage).
WEBHOOK_ROLES = frozenset({Role.OWNER, Role.ADMIN})


@strawberry.input(description="What makes a person enter the flow; give the fields its type needs.")
class FlowTriggerInput:
    type: FlowTriggerType
    list_id: strawberry.ID | None = strawberry.field(
        default=None, description="SUBSCRIBED: the list (on a double opt-in list, once confirmed)."
    )
    event_name: str | None = strawberry.field(default=None, description="EVENT: the custom event's name.")
    attribute: str | None = strawberry.field(
        default=None, description="DATE_ATTRIBUTE: a date attribute's name."
    )
    segment_id: strawberry.ID | None = strawberry.field(
        default=None, description="SEGMENT_ENTERED: the segment."
    )
    campaign_id: strawberry.ID | None = strawberry.field(default=None, description="ENGAGED: the campaign.")
    link_url: str | None = strawberry.field(default=None, description="ENGAGED: a link of the campaign.")
    time_of_day: str | None = strawberry.field(
        default=None,
        description=f"DATE_ATTRIBUTE: HH:MM in the person's timezone (default {DEFAULT_TIME_OF_DAY}).",
    )


@strawberry.input(description="Wait until the person's local clock is inside this window.")
class FlowWindowInput:
    weekdays: list[int] | None = strawberry.field(
        default=None, description="1 = Monday … 7 = Sunday; default every day."
    )
    start: str | None = strawberry.field(default=None, description="HH:MM, default 00:00.")
    end: str | None = strawberry.field(default=None, description="HH:MM, default 23:59; after start.")


@strawberry.input(description="One step; give the fields its type needs. Keys are unique within the flow.")
class FlowStepInput:
    key: str = strawberry.field(
        description="1 to 64 of A-Z a-z 0-9 _ . -; names the step in next/then/otherwise."
    )
    type: FlowStepKind
    next: str | None = strawberry.field(
        default=None, description="The key of the step after this one; omitted: the run completes here."
    )
    template_id: strawberry.ID | None = strawberry.field(default=None, description="SEND: required.")
    sender_id: strawberry.ID | None = strawberry.field(
        default=None, description="SEND: the sender it goes through; default: the default sender."
    )
    subject: str | None = strawberry.field(default=None, description="SEND: default the template's own.")
    from_email: str | None = strawberry.field(default=None, description="SEND: required.")
    from_name: str | None = None
    reply_to: str | None = None
    track_opens: bool | None = strawberry.field(default=None, description="SEND: default true.")
    track_clicks: bool | None = strawberry.field(default=None, description="SEND: default true.")
    wait_seconds: int | None = strawberry.field(
        default=None,
        description=f"WAIT: {MIN_WAIT_SECONDS} second to one year ({MAX_WAIT_SECONDS}); give it, a window, or both.",
    )
    window: FlowWindowInput | None = strawberry.field(default=None, description="WAIT: until this window.")
    condition: SubscriberFilterInput | None = strawberry.field(
        default=None,
        description="BRANCH: required. engagement.flowStep may ask about the message of a step of this flow.",
    )
    then: str | None = strawberry.field(default=None, description="BRANCH: the step for people who match.")
    otherwise: str | None = strawberry.field(default=None, description="BRANCH: the step for the others.")
    set_attributes: JSON | None = strawberry.field(default=None, description="UPDATE: attributes to set.")
    add_list_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="UPDATE: lists to join."
    )
    remove_list_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="UPDATE: lists to leave."
    )
    url: str | None = strawberry.field(
        default=None, description="WEBHOOK: where the signed POST goes (ADMIN keys only)."
    )


@strawberry.input(description="A flow starts as a DRAFT: publishFlow makes people enter it.")
class CreateFlowInput:
    name: str
    trigger: FlowTriggerInput
    steps: list[FlowStepInput] = strawberry.field(description="People enter at the first step.")
    reentry: FlowReentry | None = strawberry.field(default=None, description="Default ONCE.")
    reentry_seconds: int | None = strawberry.field(default=None, description="AFTER_SECONDS: required.")
    exit_when: SubscriberFilterInput | None = strawberry.field(
        default=None, description="A person who starts matching this leaves the flow."
    )


@strawberry.input(
    description="Edits the draft (an ACTIVE flow runs its published version until publishFlow). An omitted part "
    "keeps the draft's; trigger and steps replace theirs whole; null reentry, reentrySeconds or exitWhen removes "
    "it."
)
class UpdateFlowInput:
    id: strawberry.ID
    name: str | None = None
    trigger: FlowTriggerInput | None = None
    steps: list[FlowStepInput] | None = None
    reentry: FlowReentry | None = strawberry.field(default=strawberry.UNSET, description="null: ONCE.")
    reentry_seconds: int | None = strawberry.field(default=strawberry.UNSET)
    exit_when: SubscriberFilterInput | None = strawberry.field(default=strawberry.UNSET)


@strawberry.input(description="Moves the runs at step `from` of older versions to step `to` of the new one.")
class FlowStepMappingInput:
    from_: str = strawberry.field(name="from")
    to: str


@strawberry.input
class PublishFlowInput:
    id: strawberry.ID
    step_mapping: list[FlowStepMappingInput] | None = strawberry.field(
        default=None,
        description="People already inside stay on their version, except those at a step named here.",
    )


@strawberry.input
class FlowIdInput:
    id: strawberry.ID


@strawberry.type
class FlowPayload:
    flow: FlowType | None
    user_errors: list[UserError]


def _payload(row: FlowRow | None, errors: list[UserError]) -> FlowPayload:
    return FlowPayload(flow=FlowType.from_model(row) if row is not None else None, user_errors=errors)


# --- the input as the domain's JSON form ------------------------------------------------------------------


class _ToDomain:
    """Definition parts in the domain's JSON form, global IDs decoded; problems are collected with paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def id(self, value: str | None, kind: str, path: str) -> int | None:
        if value is None:
            return None
        pk = decode_id_or_none(value, kind)
        if pk is None:
            self.errors.append(FieldError(path, f"Not a valid {kind} ID: {value!r}", ErrorCode.INVALID_ID))
        return pk

    def ids(self, values: Sequence[str] | None, kind: str, path: str) -> list[int | None] | None:
        return None if values is None else [self.id(v, kind, path) for v in values]

    def filter(self, f: SubscriberFilterInput, path: str) -> dict[str, Any]:
        try:
            stored: dict[str, Any] = _json_safe(filter_to_domain(f, path))
            return stored
        except DomainError as exc:
            self.errors += exc.errors
            return {}

    def trigger(self, t: FlowTriggerInput) -> dict[str, Any]:
        return _given(
            type=t.type.value,
            listId=self.id(t.list_id, "MailingList", "trigger.listId"),
            eventName=t.event_name,
            attribute=t.attribute,
            segmentId=self.id(t.segment_id, "Segment", "trigger.segmentId"),
            campaignId=self.id(t.campaign_id, "Campaign", "trigger.campaignId"),
            linkUrl=t.link_url,
            timeOfDay=t.time_of_day,
        )

    def step(self, s: FlowStepInput, i: int) -> dict[str, Any]:
        path = f"steps[{i}]"
        window = (
            _given(weekdays=s.window.weekdays, start=s.window.start, end=s.window.end)
            if s.window is not None
            else None
        )
        return _given(
            key=s.key,
            type=s.type.value,
            next=s.next,
            templateId=self.id(s.template_id, "Template", f"{path}.templateId"),
            senderId=(self.id(s.sender_id, "Sender", f"{path}.senderId") or None) if s.sender_id else None,
            subject=s.subject,
            fromEmail=s.from_email,
            fromName=s.from_name,
            replyTo=s.reply_to,
            trackOpens=s.track_opens,
            trackClicks=s.track_clicks,
            waitSeconds=s.wait_seconds,
            window=window,
            condition=self.filter(s.condition, f"{path}.condition") if s.condition is not None else None,
            then=s.then,
            otherwise=s.otherwise,
            setAttributes=s.set_attributes,
            addListIds=self.ids(s.add_list_ids, "MailingList", f"{path}.addListIds"),
            removeListIds=self.ids(s.remove_list_ids, "MailingList", f"{path}.removeListIds"),
            url=s.url,
        )


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json_safe(value: Any) -> Any:
    """A filter's JSON form as the database stores it (its date-times as ISO 8601 text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _parts(input: CreateFlowInput | UpdateFlowInput) -> dict[str, Any]:
    """The definition parts the input gives (a None value: the part is removed); raises DomainError for
    malformed IDs, so call it inside the service call's error handling."""
    convert = _ToDomain()
    parts: dict[str, Any] = {}
    if input.trigger is not None:
        parts["trigger"] = convert.trigger(input.trigger)
    if input.steps is not None:
        parts["steps"] = [convert.step(s, i) for i, s in enumerate(input.steps)]
    if input.reentry is not strawberry.UNSET:
        parts["reentry"] = input.reentry.value if input.reentry is not None else None
    if input.reentry_seconds is not strawberry.UNSET:
        parts["reentrySeconds"] = input.reentry_seconds
    if input.exit_when is not strawberry.UNSET:
        parts["exitWhen"] = (
            convert.filter(input.exit_when, "exitWhen") if input.exit_when is not None else None
        )
    raise_if(convert.errors)
    return parts


def _webhook_steps_refused(info: Info, steps: list[FlowStepInput] | None) -> list[UserError]:
    principal = info.context.principal
    if principal is not None and principal.role in WEBHOOK_ROLES:
        return []
    return [
        UserError(
            field=f"steps[{i}].type",
            message="Only ADMIN keys may write WEBHOOK steps: they send subscriber data to a URL",
            code=ErrorCode.FORBIDDEN,
        )
        for i, s in enumerate(steps or [])
        if s.type is FlowStepKind.WEBHOOK
    ]


async def _create(session: AsyncSession, input: CreateFlowInput, *, allow_private: bool) -> FlowRow:
    definition = _given(**_parts(input))
    return await flows.create_flow(
        session, flows.FlowInput(name=input.name, definition=definition), allow_private=allow_private
    )


async def _update(session: AsyncSession, input: UpdateFlowInput, *, allow_private: bool) -> FlowRow:
    flow_id = decode_id(input.id, "Flow")
    parts = _parts(input)
    definition = None
    if parts:
        draft = (await flows.get_flow(session, flow_id, for_update=True)).draft
        definition = _given(**{**draft, **parts})
    return await flows.update_flow(
        session, flow_id, flows.FlowInput(name=input.name, definition=definition), allow_private=allow_private
    )


@strawberry.type
class Mutation:
    @write_mutation(description="A new flow, as a DRAFT; the whole definition is checked first.")
    async def create_flow(self, info: Info, input: CreateFlowInput) -> FlowPayload:
        if refused := _webhook_steps_refused(info, input.steps):
            return _payload(None, refused)
        allow_private = info.context.runtime.webhooks.config.allow_private
        out = await mutate(info, lambda s: _create(s, input, allow_private=allow_private))
        return _payload(out.value, out.errors)

    @write_mutation(description="Edit a flow's name or draft; an archived flow cannot be edited.")
    async def update_flow(self, info: Info, input: UpdateFlowInput) -> FlowPayload:
        if refused := _webhook_steps_refused(info, input.steps):
            return _payload(None, refused)
        allow_private = info.context.runtime.webhooks.config.allow_private
        out = await mutate(info, lambda s: _update(s, input, allow_private=allow_private))
        return _payload(out.value, out.errors)

    @write_mutation(
        description="Make the draft the version people enter on: a DRAFT flow becomes ACTIVE (a PAUSED one stays "
        "paused). People already inside stay on their version unless stepMapping moves them."
    )
    async def publish_flow(self, info: Info, input: PublishFlowInput) -> FlowPayload:
        mapping = [flows.StepMapping(source=m.from_, target=m.to) for m in input.step_mapping or []]
        allow_private = info.context.runtime.webhooks.config.allow_private
        domains = info.context.runtime.domains

        async def publish(s: AsyncSession) -> FlowRow:
            row = await flows.publish_flow(
                s, decode_id(input.id, "Flow"), mapping, allow_private=allow_private
            )
            if domains.require_verified:
                # A draft may name any From address; the version people enter on sends, so it is held to the
                # rule (after publish_flow's own checks; refused, the publication is rolled back).
                for i, step in enumerate(parse_definition(row.draft).steps):
                    if step.type == StepType.SEND:
                        await require_verified_from(s, step.from_email, domains, f"steps[{i}].fromEmail")
            return row

        out = await mutate(info, publish)
        return _payload(out.value, out.errors)

    @write_mutation(
        description="Nobody enters and nobody goes on; waits keep their due time. ACTIVE flows only."
    )
    async def pause_flow(self, info: Info, input: FlowIdInput) -> FlowPayload:
        out = await mutate(info, lambda s: flows.move_flow(s, decode_id(input.id, "Flow"), "pause"))
        return _payload(out.value, out.errors)

    @write_mutation(description="A PAUSED flow goes on: due runs move on, people enter again.")
    async def resume_flow(self, info: Info, input: FlowIdInput) -> FlowPayload:
        out = await mutate(info, lambda s: flows.move_flow(s, decode_id(input.id, "Flow"), "resume"))
        return _payload(out.value, out.errors)

    @write_mutation(description="For good: nobody enters again, and every run still inside leaves (EXITED).")
    async def archive_flow(self, info: Info, input: FlowIdInput) -> FlowPayload:
        out = await mutate(info, lambda s: flows.move_flow(s, decode_id(input.id, "Flow"), "archive"))
        if out.value is not None:
            # The runs that were inside left: the flow's counters changed.
            await publish_flow_stats(info.context.runtime.live, [out.value.id])
        return _payload(out.value, out.errors)
