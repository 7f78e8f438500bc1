"""Custom events: what the user's own systems tell us a person did ("order.completed", "trial.ended"), sent
through ``trackEvent`` and ``POST /api/events``, and what the flows' EVENT trigger starts from.

:func:`record_custom_events` is the one write path: a batch of items (up to :data:`MAX_BATCH`) in the caller's
transaction, each answered on its own (recorded, duplicate, or an error with a stable code), so that one bad
item does not cost the rest. The events go into the feedback loop's ``events`` table (type CUSTOM, in the
workspace in scope); on PostgreSQL the table's DEFAULT partition takes any month that has no partition of its
own yet, and ``partitions.ensure_event_partitions`` moves those rows when it makes one.

Idempotency, as for provider events (``event_keys``) but per workspace: an item's ``idempotencyKey`` is
inserted into ``custom_event_keys`` with ``ON CONFLICT DO NOTHING`` *before* its event. A key already there (a
retry, or an earlier item of the same batch) makes the item a duplicate answered with the first event's id.
Two transactions sending the same key at once cannot both insert it: the second waits on the first's
uncommitted key, and once that commits finds the key taken (or, above READ COMMITTED, is refused with a
serialization failure and run again by ``run_in_transaction``, which then finds it). A key is remembered for
``partitions.KEY_RETENTION`` (30 days).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import BigInteger, String, Uuid, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit import globalid
from emailkit.db.dialect import one_of, upsert
from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.feedback import CustomEventKey, Event, EventType
from emailkit.db.types import utcnow
from emailkit.domain.automation import entry
from emailkit.domain.errors import DomainError, ErrorCode, FieldError
from emailkit.domain.validation import json_object_errors, normalize_email, text_problem, unstorable_text

# Items per call: a batch is one transaction, and its answer lists every item.
MAX_BATCH: Final = 1000
NAME_MAX: Final = 100
# Letters, digits and `_ . : -`: what event names look like in the systems that send them ("order.completed",
# "billing:trial_ended"), and safe to show and match anywhere (a flow's trigger names one exactly).
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]+")
PROPERTIES_MAX_BYTES: Final = 16 * 1024
PROPERTIES_MAX_DEPTH: Final = 10
IDEMPOTENCY_KEY_MAX: Final = 255
# Clocks differ, so a time a little ahead is only a clock; more than a day ahead is a mistake (or a unit error).
MAX_AHEAD: Final = timedelta(days=1)
# Who reported it, in the `provider` column every event has (providers' names, or `emailkit` for tracking).
PROVIDER: Final = "api"


@dataclass(frozen=True)
class EventInput:
    """One item as the caller sent it. Values are checked here, types included: the JSON route passes what
    it parsed (a number where a string belongs is this item's error, not the batch's)."""

    name: object = None
    email: object = None
    # A Subscriber's global ID.
    subscriber_id: object = None
    # A JSON object; None for none.
    properties: object = None
    # A timezone-aware datetime, or its ISO 8601 text; None for now.
    occurred_at: object = None
    idempotency_key: object = None
    # Why the item could not be read at all (not a JSON object, a field nobody knows): its error.
    unreadable: str | None = None

    @classmethod
    def from_json(cls, value: object) -> EventInput:
        """An item of a JSON batch, with the GraphQL input's field names. An unknown field is an error rather
        than ignored: a misspelt ``idempotencyKey`` would silently make every retry a new event."""
        if not isinstance(value, dict):
            return cls(unreadable="Each event must be a JSON object")
        unknown = sorted(str(k) for k in value if k not in _JSON_FIELDS)
        if unknown:
            return cls(unreadable=f"Unknown field {unknown[0]!r}; known: {', '.join(_JSON_FIELDS)}")
        return cls(**{_JSON_FIELDS[k]: v for k, v in value.items()})


# The JSON (and GraphQL) names of EventInput's fields.
_JSON_FIELDS: Final = {
    "email": "email",
    "subscriberId": "subscriber_id",
    "name": "name",
    "properties": "properties",
    "occurredAt": "occurred_at",
    "idempotencyKey": "idempotency_key",
}


class ItemStatus(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CustomEvent:
    """A recorded custom event, as the flows' EVENT trigger receives it."""

    id: int
    workspace_id: int
    subscriber_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one item. A duplicate names the event its key recorded first; an error, why (the
    item's problems, the first of which a one-code answer gives)."""

    index: int
    status: ItemStatus
    event_id: int | None = None
    occurred_at: datetime | None = None
    errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True)
class TrackedEvents:
    results: list[ItemResult]
    # The events this call recorded (duplicates and errors excluded), in the items' order.
    recorded: list[CustomEvent] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.recorded)

    @property
    def duplicates(self) -> int:
        return sum(1 for r in self.results if r.status is ItemStatus.DUPLICATE)


def event_name_problem(name: str) -> str | None:
    """Why `name` cannot name a custom event (for the flows' trigger too), or None when it can."""
    if not name:
        return "An event name is required"
    if len(name) > NAME_MAX:
        return f"Must be at most {NAME_MAX} characters"
    if not NAME_PATTERN.fullmatch(name):
        return "Only letters, digits and _ . : - are allowed"
    return None


def key_digest(idempotency_key: str) -> str:
    """The stored form of a caller's key: 128 bits of its SHA-256 (as a UUID's 32 hex digits)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


# --- checking one item ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Checked:
    """An item that passed its checks, on its way into storage."""

    index: int
    name: str
    properties: dict[str, Any]
    occurred_at: datetime
    key: str | None
    email: str | None = None
    subscriber_ref: int | None = None
    subscriber_id: int = 0
    subscriber_email: str = ""


def _who(item: EventInput, errors: list[FieldError]) -> tuple[str | None, int | None]:
    """(normalised address, subscriber id): exactly one of them."""
    if item.email is None and item.subscriber_id is None:
        errors.append(FieldError("email", "Give the subscriber's email or subscriberId", ErrorCode.REQUIRED))
        return None, None
    if item.email is not None and item.subscriber_id is not None:
        errors.append(FieldError("email", "Give email or subscriberId, not both", ErrorCode.INVALID_INPUT))
        return None, None
    if item.subscriber_id is not None:
        pk = globalid.pk_of(item.subscriber_id, "Subscriber") if isinstance(item.subscriber_id, str) else None
        if pk is None:
            errors.append(FieldError("subscriberId", "Not a valid Subscriber ID", ErrorCode.INVALID_ID))
        return None, pk
    if not isinstance(item.email, str):
        errors.append(FieldError("email", "Must be a string", ErrorCode.INVALID_EMAIL))
        return None, None
    try:
        return normalize_email(item.email), None
    except DomainError as exc:
        errors.extend(exc.errors)
        return None, None


def _name(value: object, errors: list[FieldError]) -> str:
    if value is None or value == "":
        errors.append(FieldError("name", "An event name is required", ErrorCode.REQUIRED))
    elif not isinstance(value, str):
        errors.append(FieldError("name", "Must be a string", ErrorCode.INVALID_INPUT))
    elif (problem := event_name_problem(value)) is not None:
        code = ErrorCode.TOO_LONG if len(value) > NAME_MAX else ErrorCode.INVALID_EVENT_NAME
        errors.append(FieldError("name", problem, code))
    else:
        return value
    return ""


def _properties(value: object, errors: list[FieldError]) -> dict[str, Any]:
    if value is None:
        return {}
    problems = json_object_errors(
        value,
        "properties",
        what="Properties",
        max_bytes=PROPERTIES_MAX_BYTES,
        max_depth=PROPERTIES_MAX_DEPTH,
    )
    if not problems:
        # PostgreSQL's JSON refuses NUL characters and unpaired surrogates, in keys as in values.
        problems = [
            FieldError(f"properties.{path}" if path else "properties", problem, ErrorCode.INVALID_TEXT)
            for path, problem in unstorable_text(value)
        ][:1]
    errors.extend(problems)
    return value if isinstance(value, dict) and not problems else {}


def _occurred_at(value: object, now: datetime, errors: list[FieldError]) -> datetime:
    if value is None:
        return now
    when: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
    if when is None:
        errors.append(FieldError("occurredAt", "Must be an ISO 8601 date-time", ErrorCode.INVALID_INPUT))
    elif when.tzinfo is None:
        errors.append(FieldError("occurredAt", "Needs a timezone offset (e.g. Z)", ErrorCode.INVALID_INPUT))
    elif when > now + MAX_AHEAD:
        errors.append(FieldError("occurredAt", "Must not be more than a day ahead", ErrorCode.OUT_OF_RANGE))
    else:
        return when
    return now


def _key(value: object, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        errors.append(FieldError("idempotencyKey", "Must be a non-empty string", ErrorCode.INVALID_INPUT))
    elif len(value) > IDEMPOTENCY_KEY_MAX:
        errors.append(
            FieldError(
                "idempotencyKey", f"Must be at most {IDEMPOTENCY_KEY_MAX} characters", ErrorCode.TOO_LONG
            )
        )
    elif (problem := text_problem(value)) is not None:
        errors.append(FieldError("idempotencyKey", problem, ErrorCode.INVALID_TEXT))
    else:
        return key_digest(value)
    return None


def check_item(index: int, item: EventInput, now: datetime) -> _Checked | ItemResult:
    """The item ready to store, or its error result (every problem found, in the order of the fields)."""
    if item.unreadable is not None:
        return ItemResult(
            index, ItemStatus.ERROR, errors=(FieldError(None, item.unreadable, ErrorCode.INVALID_INPUT),)
        )
    errors: list[FieldError] = []
    email, subscriber_ref = _who(item, errors)
    checked = _Checked(
        index=index,
        name=_name(item.name, errors),
        properties=_properties(item.properties, errors),
        occurred_at=_occurred_at(item.occurred_at, now, errors),
        key=_key(item.idempotency_key, errors),
        email=email,
        subscriber_ref=subscriber_ref,
    )
    if errors:
        return ItemResult(index, ItemStatus.ERROR, errors=tuple(errors))
    return checked


# --- storing a batch --------------------------------------------------------------------------------------


async def _find_subscribers(session: AsyncSession, items: list[_Checked]) -> list[ItemResult]:
    """Fill in each item's subscriber (of the workspace in scope: another's is not found); the results of
    those naming nobody. People are never created here."""
    emails = {i.email for i in items if i.email is not None}
    ids = {i.subscriber_ref for i in items if i.subscriber_ref is not None}
    by_email: dict[str, int] = {}
    by_id: dict[int, str] = {}
    if emails:
        rows = await session.execute(
            select(Subscriber.id, Subscriber.email).where(one_of(session, Subscriber.email, emails, String()))
        )
        by_email = {email: pk for pk, email in rows}
        by_id.update({pk: email for email, pk in by_email.items()})
    if ids:
        rows = await session.execute(
            select(Subscriber.id, Subscriber.email).where(one_of(session, Subscriber.id, ids, BigInteger()))
        )
        by_id.update({pk: email for pk, email in rows})
    missing = []
    for item in items:
        pk = by_email.get(item.email) if item.email is not None else item.subscriber_ref
        if pk is None or pk not in by_id:
            field_name = "email" if item.email is not None else "subscriberId"
            error = FieldError(field_name, "Subscriber not found", ErrorCode.SUBSCRIBER_NOT_FOUND)
            missing.append(ItemResult(item.index, ItemStatus.ERROR, errors=(error,)))
        else:
            item.subscriber_id, item.subscriber_email = pk, by_id[pk]
    return missing


# An item whose key was used before, and the event (id, occurred_at) that key recorded before this call.
Repeated = tuple[_Checked, tuple[int | None, datetime] | None]


async def _claim_keys(
    session: AsyncSession, workspace_id: int, items: list[_Checked], now: datetime
) -> tuple[list[_Checked], list[Repeated]]:
    """Insert the items' idempotency keys: the items to record (a key of their own, or none) and the
    repeated ones."""
    firsts: dict[str, _Checked] = {}
    for item in items:
        if item.key is not None:
            firsts.setdefault(item.key, item)
    claimed: set[str] = set()
    if firsts:
        table = CustomEventKey.__table__
        # In key order, so that two batches sharing keys wait on each other in one order, never deadlock.
        rows = [
            {"workspace_id": workspace_id, "key": k, "occurred_at": firsts[k].occurred_at, "seen_at": now}
            for k in sorted(firsts)
        ]
        inserted = await session.execute(
            upsert(session)(table).values(rows).on_conflict_do_nothing().returning(table.c.key)
        )
        claimed = {_hex(k) for k in inserted.scalars()}
    taken = await _recorded_before(session, set(firsts) - claimed)
    fresh: list[_Checked] = []
    repeated: list[Repeated] = []
    for item in items:
        if item.key is None or (item.key in claimed and firsts[item.key] is item):
            fresh.append(item)
        else:
            repeated.append((item, taken.get(item.key)))
    return fresh, repeated


def _hex(key: object) -> str:
    """A key as returned by the database (a UUID's text on PostgreSQL) in its stored-digest form."""
    return str(key).replace("-", "")


async def _recorded_before(session: AsyncSession, keys: set[str]) -> dict[str, tuple[int | None, datetime]]:
    if not keys:
        return {}
    rows = await session.execute(
        select(CustomEventKey.key, CustomEventKey.event_id, CustomEventKey.occurred_at).where(
            one_of(session, CustomEventKey.key, keys, Uuid(as_uuid=False))
        )
    )
    return {_hex(k): (event_id, at) for k, event_id, at in rows}


async def _insert_events(
    session: AsyncSession, workspace_id: int, items: list[_Checked], now: datetime
) -> list[CustomEvent]:
    if not items:
        return []
    rows = [
        {
            "workspace_id": workspace_id,
            "type": EventType.CUSTOM,
            "provider": PROVIDER,
            "occurred_at": i.occurred_at,
            "recorded_at": now,
            "subscriber_id": i.subscriber_id,
            "email": i.subscriber_email,
            "name": i.name,
            "properties": i.properties,
            "dedupe_key": i.key,
        }
        for i in items
    ]
    result = await session.execute(insert(Event).returning(Event.id, sort_by_parameter_order=True), rows)
    return [
        CustomEvent(pk, workspace_id, i.subscriber_id, i.name, i.properties, i.occurred_at)
        for pk, i in zip(result.scalars(), items, strict=True)
    ]


async def _link_keys(
    session: AsyncSession, workspace_id: int, items: list[_Checked], events: list[CustomEvent]
) -> None:
    """Point each new key at its event: what a later duplicate answers with."""
    links = [{"b_key": i.key, "b_event": e.id} for i, e in zip(items, events, strict=True) if i.key]
    if not links:
        return
    table = CustomEventKey.__table__
    # A statement on the table, not the entity: the session's workspace filter does not reach it.
    stmt = (
        update(table)  # type: ignore[arg-type]
        .where(table.c.workspace_id == workspace_id, table.c.key == bindparam("b_key"))
        .values(event_id=bindparam("b_event"))
    )
    await session.execute(stmt, links)


def _check_all(items: Sequence[EventInput], now: datetime) -> tuple[list[_Checked], dict[int, ItemResult]]:
    checked: list[_Checked] = []
    refused: dict[int, ItemResult] = {}
    for index, item in enumerate(items):
        outcome = check_item(index, item, now)
        if isinstance(outcome, ItemResult):
            refused[index] = outcome
        else:
            checked.append(outcome)
    return checked, refused


async def record_custom_events(
    session: AsyncSession, items: Sequence[EventInput], *, now: datetime | None = None
) -> TrackedEvents:
    """Record a batch of custom events in the workspace in scope, inside the caller's transaction.

    Each item is answered in ``results`` (in the items' order): RECORDED with the new event's id, DUPLICATE
    (its idempotency key was used before) with the first event's id, or ERROR with its problems; ``recorded``
    holds the new events, what the flows' EVENT trigger starts from in this same transaction (trackEvent and
    POST /api/events both come through here). More than :data:`MAX_BATCH` items is a DomainError (nothing
    stored)."""
    if len(items) > MAX_BATCH:
        raise DomainError.single(
            ErrorCode.TOO_MANY_EVENTS, f"At most {MAX_BATCH} events per call ({len(items)} given)", "events"
        )
    now = now or utcnow()
    workspace_id = current_workspace_id()
    checked, results = _check_all(items, now)
    results.update((r.index, r) for r in await _find_subscribers(session, checked))
    ready = [i for i in checked if i.index not in results]
    fresh, repeated = await _claim_keys(session, workspace_id, ready, now)
    recorded = await _insert_events(session, workspace_id, fresh, now)
    await _link_keys(session, workspace_id, fresh, recorded)
    # Keys recorded by this batch, for the items after the first that repeat them.
    first_of: dict[str, CustomEvent] = {}
    for item, event in zip(fresh, recorded, strict=True):
        results[item.index] = ItemResult(item.index, ItemStatus.RECORDED, event.id, event.occurred_at)
        if item.key is not None:
            first_of[item.key] = event
    for item, before in repeated:
        results[item.index] = _duplicate(item, before, first_of)
    # The flows they start enter in this transaction: an event recorded is an event acted upon.
    await entry.events_tracked(
        session,
        workspace_id,
        [entry.TrackedEvent(e.id, e.subscriber_id, e.name, e.properties, e.occurred_at) for e in recorded],
    )
    return TrackedEvents([results[i] for i in range(len(items))], recorded)


def _duplicate(
    item: _Checked, before: tuple[int | None, datetime] | None, first_of: dict[str, CustomEvent]
) -> ItemResult:
    first = first_of.get(item.key) if item.key is not None else None
    if first is not None:
        before = (first.id, first.occurred_at)
    event_id, occurred_at = before if before is not None else (None, None)
    return ItemResult(item.index, ItemStatus.DUPLICATE, event_id, occurred_at)


@dataclass(frozen=True)
class TrackedEvent:
    """The answer to one item (trackEvent): the stored event, new or (a duplicate) the one its key recorded."""

    event: Event | None
    duplicate: bool


async def track_event(
    session: AsyncSession, item: EventInput, *, now: datetime | None = None
) -> TrackedEvent:
    """:func:`record_custom_events` for one item, whose problems are raised as a DomainError."""
    [result] = (await record_custom_events(session, [item], now=now)).results
    if result.status is ItemStatus.ERROR:
        raise DomainError(list(result.errors))
    row = None
    if result.event_id is not None and result.occurred_at is not None:
        row = await session.get(Event, (result.event_id, result.occurred_at))
    return TrackedEvent(row, duplicate=result.status is ItemStatus.DUPLICATE)
