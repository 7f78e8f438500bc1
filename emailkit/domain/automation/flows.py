"""Managing flows: create and edit the draft, publish it as a new version, pause, resume, archive; and reading
flows, their runs and the ledger of a run.

Statuses: DRAFT → ACTIVE (publish) ⇄ PAUSED → ARCHIVED. Publishing an ACTIVE or PAUSED flow whose draft was
edited makes a new version; people already inside stay on the version they entered on, unless the publish maps
their current step key to a step of the new version (``step_mapping``), which moves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import MailingList, Segment
from emailkit.db.tables.automation import (
    Flow,
    FlowRun,
    FlowRunStatus,
    FlowStatus,
    FlowStepRun,
    FlowStepStats,
    FlowTriggerType,
    FlowVersion,
)
from emailkit.db.tables.content import Template
from emailkit.db.tables.senders import Sender
from emailkit.db.tables.sending import Campaign
from emailkit.db.types import utcnow
from emailkit.domain.audience.segments.validate import check_references
from emailkit.domain.audience.subscriber_fields import attribute_errors
from emailkit.domain.automation.definition import Definition, StepType, parse_definition
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_text, normalize_email, raise_if
from emailkit.domain.webhooks_out.destinations import DestinationRefused, InvalidUrl, check_endpoint_url
from emailkit.metrics import record as metrics

MAX_NAME = 255


@dataclass(frozen=True)
class FlowInput:
    """A flow as the API gives it: the definition in its JSON form (see ``definition``)."""

    name: str | None = None
    definition: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StepMapping:
    """Moves the runs at step ``source`` of older versions to step ``target`` of the version being published."""

    source: str
    target: str


async def _check_references(session: AsyncSession, d: Definition) -> None:
    refs = d.referenced()
    errors: list[FieldError] = []
    for table, ids, code, what in (
        (MailingList, refs.lists, ErrorCode.LIST_NOT_FOUND, "List"),
        (Segment, refs.segments, ErrorCode.SEGMENT_NOT_FOUND, "Segment"),
        (Campaign, refs.campaigns, ErrorCode.CAMPAIGN_NOT_FOUND, "Campaign"),
        (Template, refs.templates, ErrorCode.TEMPLATE_NOT_FOUND, "Template"),
        (Sender, refs.senders, ErrorCode.NOT_FOUND, "Sender"),
    ):
        if not ids:
            continue
        found = set((await session.execute(select(table.id).where(table.id.in_(ids)))).scalars())
        errors += [FieldError(ids[i], f"{what} not found", code) for i in sorted(set(ids) - found)]
    raise_if(errors)
    for i, s in enumerate(d.steps):
        if s.condition is not None:
            await check_references(session, s.condition, f"steps[{i}].condition")
    if d.exit_when is not None:
        await check_references(session, d.exit_when, "exitWhen")


async def _check_addresses(d: Definition, *, allow_private: bool) -> None:
    errors: list[FieldError] = []
    for i, s in enumerate(d.steps):
        for name, value in (("fromEmail", s.from_email), ("replyTo", s.reply_to)):
            if value:
                try:
                    normalize_email(value, f"steps[{i}].{name}")
                except DomainError as exc:
                    errors += exc.errors
        if s.set_attributes:
            # The same checks as any write of a person's attributes (a timezone must be a real one).
            errors += attribute_errors(dict(s.set_attributes), f"steps[{i}].setAttributes")
        check_text(errors, f"steps[{i}].subject", s.subject)
        check_text(errors, f"steps[{i}].fromName", s.from_name)
        if s.type == StepType.WEBHOOK and s.url:
            try:
                await check_endpoint_url(s.url, allow_private=allow_private)
            except InvalidUrl as exc:
                errors.append(FieldError(f"steps[{i}].url", str(exc), ErrorCode.INVALID_URL))
            except DestinationRefused as exc:
                errors.append(FieldError(f"steps[{i}].url", str(exc), ErrorCode.DESTINATION_REFUSED))
    raise_if(errors)


async def validate(
    session: AsyncSession, raw: Mapping[str, Any], *, allow_private: bool = False
) -> Definition:
    """The definition, checked whole: its shape, its graph, and that what it names exists here."""
    d = parse_definition(raw)
    await _check_references(session, d)
    await _check_addresses(d, allow_private=allow_private)
    return d


def _check_name(name: str | None, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating and not (name or "").strip():
        errors.append(FieldError("name", "A flow needs a name", ErrorCode.REQUIRED))
    if name is not None and len(name) > MAX_NAME:
        errors.append(FieldError("name", f"At most {MAX_NAME} characters", ErrorCode.TOO_LONG))
    check_text(errors, "name", name)
    return errors


async def create_flow(session: AsyncSession, data: FlowInput, *, allow_private: bool = False) -> Flow:
    raise_if(_check_name(data.name, creating=True))
    await validate(session, data.definition or {}, allow_private=allow_private)
    row = Flow(name=(data.name or "").strip(), status=FlowStatus.DRAFT, draft=dict(data.definition or {}))
    session.add(row)
    await session.flush()
    return row


async def get_flow(session: AsyncSession, flow_id: int, *, for_update: bool = False) -> Flow:
    stmt = select(Flow).where(Flow.id == flow_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("Flow", code=ErrorCode.FLOW_NOT_FOUND)
    return row


async def update_flow(
    session: AsyncSession, flow_id: int, data: FlowInput, *, allow_private: bool = False
) -> Flow:
    """Edit the name or the draft; an ACTIVE flow goes on running its published version until a publish."""
    row = await get_flow(session, flow_id, for_update=True)
    if row.status is FlowStatus.ARCHIVED:
        raise DomainError.single(ErrorCode.INVALID_STATE, "An archived flow cannot be edited", "id")
    raise_if(_check_name(data.name, creating=False))
    if data.definition is not None:
        await validate(session, data.definition, allow_private=allow_private)
        row.draft = dict(data.definition)
    if data.name is not None:
        row.name = data.name.strip()
    row.updated_at = utcnow()
    await session.flush()
    return row


def _trigger_columns(d: Definition) -> dict[str, Any]:
    t = d.trigger
    return {
        "trigger_type": t.type,
        "trigger_list_id": t.list_id,
        "trigger_event": t.event_name,
        "trigger_segment_id": t.segment_id,
        "trigger_campaign_id": t.campaign_id,
    }


async def publish_flow(
    session: AsyncSession,
    flow_id: int,
    mapping: Sequence[StepMapping] = (),
    *,
    allow_private: bool = False,
) -> Flow:
    """Make the draft the version people enter on, and activate the flow (a PAUSED one stays paused)."""
    row = await get_flow(session, flow_id, for_update=True)
    if row.status is FlowStatus.ARCHIVED:
        raise DomainError.single(ErrorCode.INVALID_STATE, "An archived flow cannot be published", "id")
    d = await validate(session, row.draft, allow_private=allow_private)
    keys = {s.key for s in d.steps}
    errors = [
        FieldError(
            f"stepMapping[{i}].to", f"The new version has no step {m.target!r}", ErrorCode.UNKNOWN_STEP
        )
        for i, m in enumerate(mapping)
        if m.target not in keys
    ]
    raise_if(errors)
    version = FlowVersion(flow_id=row.id, version=row.version + 1, definition=dict(row.draft))
    session.add(version)
    await session.flush()
    previous = row.version_id
    row.version, row.version_id = version.version, version.id
    for name, value in _trigger_columns(d).items():
        setattr(row, name, value)
    if row.status is FlowStatus.DRAFT:
        row.status = FlowStatus.ACTIVE
    if row.trigger_type in (FlowTriggerType.SEGMENT_ENTERED, FlowTriggerType.DATE_ATTRIBUTE):
        # An incremental trigger starts from now: who already matches or whose date already passed this
        # year is not "entering" (see triggers).
        row.trigger_state = None
    row.updated_at = utcnow()
    if previous is not None and mapping:
        await _move_mapped_runs(session, row.id, version.id, d, mapping)
    await session.flush()
    return row


async def _move_mapped_runs(
    session: AsyncSession, flow_id: int, version_id: int, d: Definition, mapping: Sequence[StepMapping]
) -> None:
    """Runs of older versions at a mapped step go on at its target in the new version. Onto a WAIT, a run
    that was waiting keeps its due time (the wait goes on); onto any other step it is due at once."""
    for m in mapping:
        target = d.step(m.target)
        values: dict[str, Any] = {"version_id": version_id, "step_key": m.target}
        if target is None or target.type != StepType.WAIT:
            values.update(waiting=False, due_at=utcnow())
        await session.execute(
            update(FlowRun)
            .where(
                FlowRun.flow_id == flow_id,
                FlowRun.status == FlowRunStatus.ACTIVE,
                FlowRun.version_id != version_id,
                FlowRun.step_key == m.source,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


_MOVES: dict[str, tuple[set[FlowStatus], FlowStatus, str]] = {
    "pause": ({FlowStatus.ACTIVE}, FlowStatus.PAUSED, "Only an ACTIVE flow can be paused"),
    "resume": ({FlowStatus.PAUSED}, FlowStatus.ACTIVE, "Only a PAUSED flow can be resumed"),
    "archive": (
        {FlowStatus.DRAFT, FlowStatus.ACTIVE, FlowStatus.PAUSED},
        FlowStatus.ARCHIVED,
        "The flow is archived already",
    ),
}


async def move_flow(session: AsyncSession, flow_id: int, move: str) -> Flow:
    """Pause (nobody enters, nobody moves on; waits keep their due time), resume, or archive (every run still
    inside leaves, for good)."""
    allowed, target, message = _MOVES[move]
    row = await get_flow(session, flow_id, for_update=True)
    if row.status not in allowed:
        raise DomainError.single(ErrorCode.INVALID_STATE, message, "id")
    row.status = target
    row.updated_at = utcnow()
    if target is FlowStatus.ARCHIVED:
        ended = await session.execute(
            update(FlowRun)
            .where(FlowRun.flow_id == row.id, FlowRun.status == FlowRunStatus.ACTIVE)
            .values(
                status=FlowRunStatus.EXITED, exit_reason="flow_archived", finished_at=utcnow(), due_at=None
            )
        )
        count = ended.rowcount or 0  # type: ignore[attr-defined]
        metrics.flow_runs("exited", count)
        row.active -= count
        row.exited += count
    await session.flush()
    return row


async def find_flows(session: AsyncSession, *, first: int, after: int | None) -> Page[Flow]:
    return await keyset_page(session, select(Flow), Flow.id, first=first, after=after)


async def flows_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Flow]:
    rows = (await session.execute(select(Flow).where(Flow.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def find_runs(
    session: AsyncSession,
    flow_id: int,
    *,
    first: int,
    after: int | None,
    status: FlowRunStatus | None = None,
) -> Page[FlowRun]:
    stmt = select(FlowRun).where(FlowRun.flow_id == flow_id)
    if status is not None:
        stmt = stmt.where(FlowRun.status == status)
    return await keyset_page(session, stmt, FlowRun.id, first=first, after=after)


async def runs_of_subscriber(
    session: AsyncSession, subscriber_id: int, *, first: int, after: int | None
) -> Page[FlowRun]:
    stmt = select(FlowRun).where(FlowRun.subscriber_id == subscriber_id)
    return await keyset_page(session, stmt, FlowRun.id, first=first, after=after)


async def history_of_runs(session: AsyncSession, run_ids: Sequence[int]) -> dict[int, list[FlowStepRun]]:
    """Each run's ledger rows, in the order they ran."""
    out: dict[int, list[FlowStepRun]] = {rid: [] for rid in run_ids}
    stmt = (
        select(FlowStepRun)
        .where(FlowStepRun.run_id.in_(run_ids))
        .order_by(FlowStepRun.run_id, FlowStepRun.visit)
    )
    for row in (await session.execute(stmt)).scalars():
        out[row.run_id].append(row)
    return out


async def step_stats(session: AsyncSession, flow_ids: Sequence[int]) -> dict[int, dict[str, FlowStepStats]]:
    out: dict[int, dict[str, FlowStepStats]] = {fid: {} for fid in flow_ids}
    for row in (
        await session.execute(select(FlowStepStats).where(FlowStepStats.flow_id.in_(flow_ids)))
    ).scalars():
        out[row.flow_id][row.step_key] = row
    return out


async def published_definition(session: AsyncSession, flow: Flow) -> Definition | None:
    """The version people enter on now, or None before the first publish."""
    if flow.version_id is None:
        return None
    version = await session.get(FlowVersion, flow.version_id)
    return parse_definition(version.definition) if version is not None else None
