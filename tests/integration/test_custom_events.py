"""Custom events recorded through the domain (emailkit.domain.automation.events), on both backends: what is
stored, each validation error, idempotency (sequential, in one batch, and concurrent), the batch limit,
workspaces, partitions and the keys' retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.feedback import CustomEventKey, Event, EventType
from emailkit.domain.audience import subscribers
from emailkit.domain.automation.events import (
    MAX_BATCH,
    EventInput,
    ItemStatus,
    TrackedEvents,
    record_custom_events,
)
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.feedback.partitions import DEFAULT_PARTITION, maintain_event_partitions, months_from
from emailkit.domain.transactions import run_in_transaction
from tests.support.factories import make_workspace
from tests.support.races import default_isolation, wait_until_blocked

NOW = datetime(2030, 5, 17, 12, 0, tzinfo=UTC)


async def person(db: Database, email: str = "ada@example.org") -> int:
    async with db.transaction() as session:
        return (await subscribers.create_subscriber(session, email)).id


async def track(db: Database, *items: EventInput, now: datetime | None = NOW) -> TrackedEvents:
    return await run_in_transaction(db, lambda s: record_custom_events(s, items, now=now))


async def stored(db: Database) -> list[Event]:
    async with db.session() as session:
        return list((await session.execute(select(Event).order_by(Event.id))).scalars())


def sid(pk: int) -> str:
    return globalid.encode("Subscriber", pk)


async def test_a_batch_is_stored_as_custom_events_of_its_people(db: Database) -> None:
    ada, bob = await person(db), await person(db, "bob@example.org")
    out = await track(
        db,
        EventInput(
            name="order.completed", email=" Ada@Example.org ", properties={"total": 42.5, "sku": ["a"]}
        ),
        EventInput(name="trial:ended", subscriber_id=sid(bob), occurred_at="2030-05-01T08:30:00+02:00"),
    )
    assert [r.status for r in out.results] == [ItemStatus.RECORDED, ItemStatus.RECORDED]
    assert (out.accepted, out.duplicates) == (2, 0)
    rows = await stored(db)
    assert [r.id for r in rows] == [r.event_id for r in out.results] == [e.id for e in out.recorded]
    first, second = rows
    assert (first.type, first.name, first.properties) == (
        EventType.CUSTOM,
        "order.completed",
        {"total": 42.5, "sku": ["a"]},
    )
    assert (first.subscriber_id, first.email, first.provider) == (ada, "ada@example.org", "api")
    assert first.occurred_at == NOW and first.recorded_at == NOW
    assert (second.subscriber_id, second.name, second.properties) == (bob, "trial:ended", {})
    assert second.occurred_at == datetime(2030, 5, 1, 6, 30, tzinfo=UTC)
    # What the flows' trigger receives is what was stored.
    assert [(e.subscriber_id, e.name, e.properties, e.occurred_at) for e in out.recorded] == [
        (ada, "order.completed", {"total": 42.5, "sku": ["a"]}, NOW),
        (bob, "trial:ended", {}, second.occurred_at),
    ]


BIG = {"blob": "x" * (16 * 1024)}


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


INVALID: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (item fields besides a valid email and name, field, code)
    "no person": ({"email": None}, "email", "REQUIRED"),
    "both email and id": ({"subscriber_id": sid(1)}, "email", "INVALID_INPUT"),
    "bad email": ({"email": "not-an-address"}, "email", "INVALID_EMAIL"),
    "email not a string": ({"email": 12}, "email", "INVALID_EMAIL"),
    "bad id": ({"email": None, "subscriber_id": "nope"}, "subscriberId", "INVALID_ID"),
    "id of another type": (
        {"email": None, "subscriber_id": globalid.encode("MailingList", 1)},
        "subscriberId",
        "INVALID_ID",
    ),
    "no name": ({"name": None}, "name", "REQUIRED"),
    "empty name": ({"name": ""}, "name", "REQUIRED"),
    "name not a string": ({"name": 5}, "name", "INVALID_INPUT"),
    "name too long": ({"name": "a" * 101}, "name", "TOO_LONG"),
    "name with a space": ({"name": "order completed"}, "name", "INVALID_EVENT_NAME"),
    "name with a slash": ({"name": "a/b"}, "name", "INVALID_EVENT_NAME"),
    "properties not an object": ({"properties": [1, 2]}, "properties", "INVALID_INPUT"),
    "properties too large": ({"properties": BIG}, "properties", "TOO_LONG"),
    "properties too deep": ({"properties": deep(11)}, "properties", "INVALID_INPUT"),
    "properties with NUL": ({"properties": {"a": "x\x00y"}}, "properties.a", "INVALID_TEXT"),
    "far future": ({"occurred_at": NOW + timedelta(days=1, minutes=1)}, "occurredAt", "OUT_OF_RANGE"),
    "no offset": ({"occurred_at": "2030-05-01T08:30:00"}, "occurredAt", "INVALID_INPUT"),
    "not a date": ({"occurred_at": "yesterday"}, "occurredAt", "INVALID_INPUT"),
    "date not a string": ({"occurred_at": 1_700_000_000}, "occurredAt", "INVALID_INPUT"),
    "empty key": ({"idempotency_key": ""}, "idempotencyKey", "INVALID_INPUT"),
    "key too long": ({"idempotency_key": "k" * 256}, "idempotencyKey", "TOO_LONG"),
    "unknown address": ({"email": "nobody@example.org"}, "email", "SUBSCRIBER_NOT_FOUND"),
    "unknown id": ({"email": None, "subscriber_id": sid(987_654)}, "subscriberId", "SUBSCRIBER_NOT_FOUND"),
}


@pytest.mark.parametrize("case", INVALID)
async def test_each_invalid_item_is_refused_with_its_code_and_the_others_are_recorded(
    db: Database, case: str
) -> None:
    await person(db)
    fields, field, code = INVALID[case]
    bad = EventInput(**{"name": "signed_up", "email": "ada@example.org", **fields})
    good = EventInput(name="signed_up", email="ada@example.org")
    out = await track(db, good, bad, good)
    assert [r.status for r in out.results] == [ItemStatus.RECORDED, ItemStatus.ERROR, ItemStatus.RECORDED]
    error = out.results[1].errors[0]
    assert (error.field, error.code) == (field, code), error
    assert error.message
    assert len(await stored(db)) == 2


async def test_limits_are_inclusive(db: Database) -> None:
    """A name of 100 characters, properties of exactly 16 KB, a time a day ahead, a key of 255 characters."""
    await person(db)
    exactly = {"blob": "x" * (16 * 1024 - len('{"blob":""}'))}
    out = await track(
        db,
        EventInput(
            name="n" * 100,
            email="ada@example.org",
            properties=exactly,
            occurred_at=NOW + timedelta(days=1),
            idempotency_key="k" * 255,
        ),
    )
    assert out.results[0].status is ItemStatus.RECORDED, out.results[0].errors


async def test_the_same_key_twice_makes_one_event(db: Database) -> None:
    await person(db)
    item = EventInput(name="order.completed", email="ada@example.org", idempotency_key="order-1")
    first = await track(db, item)
    # A retry, even one that differs, is the same event: the key decides.
    again = await track(db, EventInput(name="other", email="ada@example.org", idempotency_key="order-1"))
    assert first.results[0].status is ItemStatus.RECORDED
    assert again.results[0].status is ItemStatus.DUPLICATE
    assert (again.accepted, again.duplicates, again.recorded) == (0, 1, [])
    assert again.results[0].event_id == first.results[0].event_id
    assert again.results[0].occurred_at == first.results[0].occurred_at
    [row] = await stored(db)
    assert row.name == "order.completed"


async def test_a_repeated_key_inside_one_batch_is_a_duplicate_of_its_first_item(db: Database) -> None:
    await person(db)
    keyed = EventInput(name="clicked", email="ada@example.org", idempotency_key="k")
    out = await track(db, keyed, EventInput(name="clicked", email="ada@example.org"), keyed, keyed)
    assert [r.status for r in out.results] == [
        ItemStatus.RECORDED,
        ItemStatus.RECORDED,
        ItemStatus.DUPLICATE,
        ItemStatus.DUPLICATE,
    ]
    assert out.results[2].event_id == out.results[3].event_id == out.results[0].event_id
    assert len(await stored(db)) == 2


async def test_keys_are_case_sensitive_and_an_item_in_error_uses_no_key(db: Database) -> None:
    await person(db)
    refused = await track(db, EventInput(name="x", email="nobody@example.org", idempotency_key="A"))
    assert refused.results[0].status is ItemStatus.ERROR
    out = await track(
        db,
        EventInput(name="x", email="ada@example.org", idempotency_key="A"),
        EventInput(name="x", email="ada@example.org", idempotency_key="a"),
    )
    assert [r.status for r in out.results] == [ItemStatus.RECORDED, ItemStatus.RECORDED]


async def test_keys_are_per_workspace_and_people_of_another_workspace_are_not_found(db: Database) -> None:
    ada = await person(db)
    other = await make_workspace(db, "other")
    with workspace_scope(other):
        theirs = await person(db, "ada@example.org")
        mine = await track(
            db,
            EventInput(name="x", email="ada@example.org", idempotency_key="shared"),
            EventInput(name="x", subscriber_id=sid(ada)),
        )
    here = await track(
        db,
        EventInput(name="x", email="ada@example.org", idempotency_key="shared"),
        EventInput(name="x", subscriber_id=sid(theirs)),
    )
    assert mine.results[0].status is here.results[0].status is ItemStatus.RECORDED
    assert mine.results[1].errors[0].code == here.results[1].errors[0].code == ErrorCode.SUBSCRIBER_NOT_FOUND
    assert mine.recorded[0].workspace_id == other and mine.recorded[0].subscriber_id == theirs
    assert here.recorded[0].subscriber_id == ada
    with workspace_scope(other):
        assert [r.subscriber_id for r in await stored(db)] == [theirs]


async def test_more_than_the_batch_limit_is_refused_whole(db: Database) -> None:
    await person(db)
    items = [EventInput(name="x", email="ada@example.org")] * (MAX_BATCH + 1)
    with pytest.raises(DomainError) as refused:
        await track(db, *items)
    assert refused.value.errors[0].code == ErrorCode.TOO_MANY_EVENTS
    assert await stored(db) == []
    full = await track(db, *items[:MAX_BATCH])
    assert full.accepted == MAX_BATCH


async def test_concurrent_sends_of_one_key_make_one_event(db: Database) -> None:
    """However they interleave (on SQLite one waits for the other's lock and is run again)."""
    await person(db)
    item = EventInput(name="paid", email="ada@example.org", idempotency_key="invoice-7")
    outs = await asyncio.gather(*(track(db, item, now=None) for _ in range(6)))
    statuses = sorted(o.results[0].status for o in outs)
    assert statuses == [ItemStatus.DUPLICATE] * 5 + [ItemStatus.RECORDED]
    [row] = await stored(db)
    assert {o.results[0].event_id for o in outs} == {row.id}


@pytest.mark.postgresql_only
@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
async def test_a_send_waiting_on_an_uncommitted_key_becomes_its_duplicate(
    db: Database, isolation: str
) -> None:
    """The second transaction blocks on the first one's key, and once that commits answers with its event
    (above READ COMMITTED after a rerun: the serialization failure is retried)."""
    await person(db)
    item = EventInput(name="paid", email="ada@example.org", idempotency_key="invoice-8")
    async with default_isolation(db, isolation) as other:
        async with other.transaction() as first_session:
            first = await record_custom_events(first_session, [item])
            second = asyncio.ensure_future(track(other, item, now=None))
            await wait_until_blocked(other, waiting=second)
        assert first.results[0].status is ItemStatus.RECORDED
        out = await second
    assert out.results[0].status is ItemStatus.DUPLICATE
    assert out.results[0].event_id == first.results[0].event_id
    assert len(await stored(db)) == 1


async def test_keys_are_remembered_for_thirty_days(db: Database) -> None:
    await person(db)
    item = EventInput(name="x", email="ada@example.org", idempotency_key="old")
    await track(db, item, now=datetime.now(UTC) - timedelta(days=31))
    await track(db, EventInput(name="x", email="ada@example.org", idempotency_key="recent"), now=None)
    await maintain_event_partitions(db)
    async with db.session() as session:
        assert (await session.execute(select(func.count()).select_from(CustomEventKey))).scalar_one() == 1
    assert (await track(db, item, now=None)).results[0].status is ItemStatus.RECORDED


async def where(db: Database, event_id: int) -> str:
    async with db.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT tableoid::regclass::text FROM events WHERE id = :i"), {"i": event_id}
        )
        return str(row.scalar_one())


@pytest.mark.postgresql_only
async def test_any_month_lands_in_a_partition(db: Database) -> None:
    """This month's partition, or the DEFAULT one for a month that has none; both read back the same."""
    await person(db)
    now = datetime.now(UTC)
    out = await track(
        db,
        EventInput(name="x", email="ada@example.org", properties={"n": 1}),
        EventInput(
            name="x", email="ada@example.org", occurred_at=now - timedelta(days=800), properties={"n": 2}
        ),
        now=now,
    )
    recent, old = (r.event_id for r in out.results)
    assert recent is not None and old is not None
    assert await where(db, recent) == f"emailkit_events.{months_from(now)[0].name}"
    assert await where(db, old) == f"emailkit_events.{DEFAULT_PARTITION}"
    assert [r.properties for r in await stored(db)] == [{"n": 1}, {"n": 2}]
