"""A flow's definition: its trigger, its graph of steps, its re-entry policy and exit condition; parsed from the
JSON form the API gives (and the database keeps), and checked whole before anything is saved.

The JSON form is the one stored in ``flows.draft`` and ``flow_versions.definition``: camelCase keys as in the
GraphQL inputs, so a version reads back exactly as it was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Final

from emailkit.db.tables.automation import FlowReentry, FlowTriggerType
from emailkit.domain.audience.segments.filter import SubscriberFilter, walk
from emailkit.domain.audience.segments.validate import parse_filter
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

MAX_STEPS: Final = 100
MIN_WAIT_SECONDS: Final = 1
MAX_WAIT_SECONDS: Final = 365 * 24 * 3600  # one year
MAX_ATTRIBUTES_SET: Final = 50
STEP_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
DEFAULT_TIME_OF_DAY: Final = "09:00"


class StepType:
    SEND = "SEND"
    WAIT = "WAIT"
    BRANCH = "BRANCH"
    UPDATE = "UPDATE"
    WEBHOOK = "WEBHOOK"
    EXIT = "EXIT"

    ALL: Final = (SEND, WAIT, BRANCH, UPDATE, WEBHOOK, EXIT)


@dataclass(frozen=True)
class Trigger:
    type: FlowTriggerType
    list_id: int | None = None
    event_name: str | None = None
    attribute: str | None = None
    segment_id: int | None = None
    campaign_id: int | None = None
    link_url: str | None = None
    # DATE_ATTRIBUTE: the person's local time of day the anniversary run starts at.
    time_of_day: time | None = None


@dataclass(frozen=True)
class Window:
    """WAIT until the person's local clock is inside this window (weekdays 1 = Monday … 7 = Sunday)."""

    weekdays: tuple[int, ...]
    start: time
    end: time


@dataclass(frozen=True)
class Step:
    key: str
    type: str
    next: str | None = None
    template_id: int | None = None
    # SEND: the sender it goes through (None: the instance's default sender).
    sender_id: int | None = None
    subject: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    track_opens: bool = True
    track_clicks: bool = True
    wait_seconds: int | None = None
    window: Window | None = None
    condition: SubscriberFilter | None = None
    then: str | None = None
    otherwise: str | None = None
    set_attributes: Mapping[str, Any] = field(default_factory=dict)
    add_list_ids: tuple[int, ...] = ()
    remove_list_ids: tuple[int, ...] = ()
    url: str | None = None

    def exits(self) -> list[str]:
        """The steps this one can lead to."""
        if self.type == StepType.BRANCH:
            return [k for k in (self.then, self.otherwise) if k is not None]
        return [self.next] if self.next is not None else []


@dataclass(frozen=True)
class Definition:
    trigger: Trigger
    steps: tuple[Step, ...]
    reentry: FlowReentry = FlowReentry.ONCE
    reentry_seconds: int | None = None
    exit_when: SubscriberFilter | None = None

    @property
    def first(self) -> Step:
        return self.steps[0]

    def step(self, key: str | None) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)

    def referenced(self) -> References:
        """Ids the definition names, which must exist in the workspace."""
        refs = References()
        t = self.trigger
        _add(refs.lists, t.list_id, "trigger.listId")
        _add(refs.segments, t.segment_id, "trigger.segmentId")
        _add(refs.campaigns, t.campaign_id, "trigger.campaignId")
        for i, s in enumerate(self.steps):
            _add(refs.templates, s.template_id, f"steps[{i}].templateId")
            _add(refs.senders, s.sender_id, f"steps[{i}].senderId")
            for lid in (*s.add_list_ids, *s.remove_list_ids):
                _add(refs.lists, lid, f"steps[{i}]")
        return refs


@dataclass
class References:
    lists: dict[int, str] = field(default_factory=dict)
    segments: dict[int, str] = field(default_factory=dict)
    campaigns: dict[int, str] = field(default_factory=dict)
    templates: dict[int, str] = field(default_factory=dict)
    senders: dict[int, str] = field(default_factory=dict)


def _add(into: dict[int, str], value: int | None, path: str) -> None:
    if value is not None:
        into.setdefault(value, path)


# --- parsing ----------------------------------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, path: str, message: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> None:
        self.items.append(FieldError(path, message, code))


def _int(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError("not a whole number")
    return raw


def _time(raw: Any, path: str, errors: _Errors) -> time | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not TIME_OF_DAY.fullmatch(raw):
        errors.add(path, "Must be a time of day as HH:MM (24-hour)", ErrorCode.OUT_OF_RANGE)
        return None
    hours, minutes = raw.split(":")
    return time(int(hours), int(minutes))


def _trigger(raw: Mapping[str, Any], errors: _Errors) -> Trigger | None:
    path = "trigger"
    try:
        kind = FlowTriggerType(str(raw.get("type")))
    except ValueError:
        errors.add(f"{path}.type", "Unknown trigger type", ErrorCode.INVALID_INPUT)
        return None
    needs = {
        FlowTriggerType.SUBSCRIBED: "listId",
        FlowTriggerType.EVENT: "eventName",
        FlowTriggerType.DATE_ATTRIBUTE: "attribute",
        FlowTriggerType.SEGMENT_ENTERED: "segmentId",
        FlowTriggerType.ENGAGED: "campaignId",
    }[kind]
    if raw.get(needs) in (None, ""):
        errors.add(f"{path}.{needs}", f"A {kind.value} trigger needs {needs}", ErrorCode.REQUIRED)
        return None
    event = raw.get("eventName")
    if event is not None and (not isinstance(event, str) or not EVENT_NAME.fullmatch(event)):
        errors.add(
            f"{path}.eventName", "Event names are 1 to 100 of A-Z a-z 0-9 _ . : -", ErrorCode.INVALID_INPUT
        )
    attribute = raw.get("attribute")
    if attribute is not None and (not isinstance(attribute, str) or not ATTRIBUTE_NAME.fullmatch(attribute)):
        errors.add(
            f"{path}.attribute", "An attribute name: 1 to 100 of A-Z a-z 0-9 _ -", ErrorCode.INVALID_INPUT
        )
    link = raw.get("linkUrl")
    if link is not None and (not isinstance(link, str) or not 0 < len(link) <= 2048):
        errors.add(f"{path}.linkUrl", "A URL of at most 2048 characters", ErrorCode.INVALID_URL)
    at = _time(raw.get("timeOfDay"), f"{path}.timeOfDay", errors)
    if kind is FlowTriggerType.DATE_ATTRIBUTE and at is None and raw.get("timeOfDay") is None:
        at = _time(DEFAULT_TIME_OF_DAY, path, errors)
    try:
        return Trigger(
            type=kind,
            list_id=_int(raw.get("listId")),
            event_name=event,
            attribute=attribute,
            segment_id=_int(raw.get("segmentId")),
            campaign_id=_int(raw.get("campaignId")),
            link_url=link,
            time_of_day=at,
        )
    except ValueError:
        errors.add(path, "Ids must be whole numbers", ErrorCode.INVALID_ID)
        return None


def _window(raw: Any, path: str, errors: _Errors) -> Window | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.add(path, "Must be an object", ErrorCode.INVALID_INPUT)
        return None
    days = raw.get("weekdays") or [1, 2, 3, 4, 5, 6, 7]
    if not isinstance(days, list) or not all(isinstance(d, int) and 1 <= d <= 7 for d in days):
        errors.add(f"{path}.weekdays", "Weekdays are 1 (Monday) to 7 (Sunday)", ErrorCode.OUT_OF_RANGE)
        return None
    start = _time(raw.get("start", "00:00"), f"{path}.start", errors)
    end = _time(raw.get("end", "23:59"), f"{path}.end", errors)
    if start is None or end is None:
        return None
    if start >= end:
        errors.add(path, "The window must end after it starts", ErrorCode.OUT_OF_RANGE)
        return None
    return Window(tuple(sorted(set(days))), start, end)


def _check_send(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    if s.template_id is None:
        errors.add(f"{path}.templateId", "A SEND step needs a template", ErrorCode.REQUIRED)
    if not s.from_email:
        errors.add(f"{path}.fromEmail", "A SEND step needs a from address", ErrorCode.REQUIRED)


def _check_wait(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    # The raw window: one that was given but refused has its own error already.
    if s.wait_seconds is None and raw.get("window") is None:
        errors.add(f"{path}.waitSeconds", "A WAIT step needs waitSeconds or a window", ErrorCode.REQUIRED)
    if s.wait_seconds is not None and not MIN_WAIT_SECONDS <= s.wait_seconds <= MAX_WAIT_SECONDS:
        errors.add(
            f"{path}.waitSeconds",
            f"A wait lasts from {MIN_WAIT_SECONDS} second to one year ({MAX_WAIT_SECONDS} seconds)",
            ErrorCode.OUT_OF_RANGE,
        )


def _check_branch(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    if raw.get("condition") is None:
        errors.add(f"{path}.condition", "A BRANCH step needs a condition", ErrorCode.REQUIRED)
    if s.then is None or s.otherwise is None:
        errors.add(path, "A BRANCH step needs both `then` and `otherwise`", ErrorCode.REQUIRED)
    if s.next is not None:
        errors.add(f"{path}.next", "A BRANCH goes on through `then` and `otherwise`", ErrorCode.INVALID_INPUT)


def _check_update(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    if not (s.set_attributes or s.add_list_ids or s.remove_list_ids):
        errors.add(
            path, "An UPDATE step needs setAttributes, addListIds or removeListIds", ErrorCode.REQUIRED
        )
    if len(s.set_attributes) > MAX_ATTRIBUTES_SET:
        errors.add(
            f"{path}.setAttributes", f"At most {MAX_ATTRIBUTES_SET} attributes", ErrorCode.OUT_OF_RANGE
        )


def _check_webhook(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    if not s.url:
        errors.add(f"{path}.url", "A WEBHOOK step needs a URL", ErrorCode.REQUIRED)


def _check_exit(s: Step, path: str, raw: Mapping[str, Any], errors: _Errors) -> None:
    if s.next is not None:
        errors.add(f"{path}.next", "An EXIT step ends the run: it has no next step", ErrorCode.INVALID_INPUT)


# What each step type requires of its own fields.
_CHECKS = {
    StepType.SEND: _check_send,
    StepType.WAIT: _check_wait,
    StepType.BRANCH: _check_branch,
    StepType.UPDATE: _check_update,
    StepType.WEBHOOK: _check_webhook,
    StepType.EXIT: _check_exit,
}


def _step(raw: Any, i: int, errors: _Errors) -> Step | None:
    path = f"steps[{i}]"
    if not isinstance(raw, Mapping):
        errors.add(path, "Must be an object", ErrorCode.INVALID_INPUT)
        return None
    key = raw.get("key")
    if not key:
        errors.add(f"{path}.key", "Every step needs a key", ErrorCode.REQUIRED)
        return None
    if not isinstance(key, str) or not STEP_KEY.fullmatch(key):
        errors.add(f"{path}.key", "Step keys are 1 to 64 of A-Z a-z 0-9 _ . -", ErrorCode.INVALID_INPUT)
        return None
    kind = raw.get("type")
    if kind not in StepType.ALL:
        errors.add(f"{path}.type", "Unknown step type", ErrorCode.INVALID_INPUT)
        return None
    condition = None
    if raw.get("condition") is not None:
        try:
            condition = parse_filter(raw["condition"], f"{path}.condition", flow_steps=True)
        except DomainError as exc:
            errors.items.extend(exc.errors)
    attributes = raw.get("setAttributes") or {}
    if not isinstance(attributes, Mapping):
        errors.add(f"{path}.setAttributes", "Must be an object", ErrorCode.INVALID_INPUT)
        attributes = {}
    try:
        step = Step(
            key=key,
            type=kind,
            next=raw.get("next"),
            template_id=_int(raw.get("templateId")),
            sender_id=_int(raw.get("senderId")),
            subject=raw.get("subject"),
            from_email=raw.get("fromEmail"),
            from_name=raw.get("fromName"),
            reply_to=raw.get("replyTo"),
            track_opens=raw.get("trackOpens", True) is not False,
            track_clicks=raw.get("trackClicks", True) is not False,
            wait_seconds=_int(raw.get("waitSeconds")),
            window=_window(raw.get("window"), f"{path}.window", errors),
            condition=condition,
            then=raw.get("then"),
            otherwise=raw.get("otherwise"),
            set_attributes=dict(attributes),
            add_list_ids=tuple(_int(x) or 0 for x in raw.get("addListIds") or ()),
            remove_list_ids=tuple(_int(x) or 0 for x in raw.get("removeListIds") or ()),
            url=raw.get("url"),
        )
    except ValueError:
        errors.add(path, "Ids and seconds must be whole numbers", ErrorCode.INVALID_INPUT)
        return None
    _CHECKS[kind](step, path, raw, errors)
    return step


def _check_graph(steps: Sequence[Step], errors: _Errors) -> None:
    """Keys unique, every exit names a step, and no cycle runs without a WAIT (it would spin a worker)."""
    seen: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.key in seen:
            errors.add(f"steps[{i}].key", f"Step key {s.key!r} is used twice", ErrorCode.DUPLICATE_STEP_KEY)
        seen.setdefault(s.key, i)
    for i, s in enumerate(steps):
        for name in ("next", "then", "otherwise"):
            target = getattr(s, name)
            if target is not None and target not in seen:
                errors.add(f"steps[{i}].{name}", f"No step has the key {target!r}", ErrorCode.UNKNOWN_STEP)
        for path, node in walk(s.condition, f"steps[{i}].condition") if s.condition else ():
            ref = node.engagement.flow_step if node.engagement is not None else None
            if ref is not None and ref not in seen:
                errors.add(
                    f"{path}.engagement.flowStep", f"No step has the key {ref!r}", ErrorCode.UNKNOWN_STEP
                )
    if errors.items:
        return
    edges = {s.key: [] if s.type == StepType.WAIT else s.exits() for s in steps}
    cycle = _find_cycle(edges)
    if cycle:
        errors.add(
            "steps",
            f"The steps {' → '.join(cycle)} loop without a WAIT between them",
            ErrorCode.CYCLE_WITHOUT_WAIT,
        )


def _find_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle in the graph (a WAIT step has no outgoing edge here), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in edges:
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def parse_definition(raw: Mapping[str, Any]) -> Definition:
    """The definition in ``raw`` (the JSON form), or a DomainError listing every problem found."""
    errors = _Errors()
    trigger_raw = raw.get("trigger")
    trigger = None
    if not isinstance(trigger_raw, Mapping):
        errors.add("trigger", "A flow needs a trigger", ErrorCode.REQUIRED)
    else:
        trigger = _trigger(trigger_raw, errors)
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        errors.add("steps", "A flow needs at least one step", ErrorCode.REQUIRED)
        steps_raw = []
    elif len(steps_raw) > MAX_STEPS:
        errors.add("steps", f"A flow has at most {MAX_STEPS} steps", ErrorCode.OUT_OF_RANGE)
    steps = [s for i, raw_step in enumerate(steps_raw) if (s := _step(raw_step, i, errors)) is not None]
    if len(steps) == len(steps_raw):
        _check_graph(steps, errors)
    reentry, seconds = _reentry(raw, errors)
    exit_when = None
    if raw.get("exitWhen") is not None:
        try:
            exit_when = parse_filter(raw["exitWhen"], "exitWhen")
        except DomainError as exc:
            errors.items.extend(exc.errors)
    if errors.items:
        raise DomainError(errors.items)
    assert trigger is not None
    return Definition(trigger, tuple(steps), reentry, seconds, exit_when)


def _reentry(raw: Mapping[str, Any], errors: _Errors) -> tuple[FlowReentry, int | None]:
    try:
        reentry = FlowReentry(raw.get("reentry") or FlowReentry.ONCE)
    except ValueError:
        errors.add("reentry", "Must be ONCE, ALWAYS or AFTER_SECONDS", ErrorCode.INVALID_INPUT)
        return FlowReentry.ONCE, None
    seconds = raw.get("reentrySeconds")
    if reentry is FlowReentry.AFTER_SECONDS:
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 10 * 366 * 86400:
            errors.add(
                "reentrySeconds",
                "AFTER_SECONDS needs reentrySeconds (1 s to 10 years)",
                ErrorCode.OUT_OF_RANGE,
            )
            return reentry, None
        return reentry, seconds
    return reentry, None
