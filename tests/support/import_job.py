"""CSV imports run straight through the domain for the import job's tests, and what they read back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import (
    Import,
    ImportMode,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.audience.imports.service import ImportRequest

UPDATE_CSV = b"email,name,City,address.zip\nanna@example.com,,Berlin,10115\nnew@example.com,New,Paris,\n"


async def start(
    db: Database,
    data: bytes,
    *,
    list_ids: Sequence[int] = (),
    mode: ImportMode = ImportMode.UPSERT,
    status: SubscriptionStatus | None = None,
    column_map: object = None,
    piece: int | None = None,
    trigger_flows: bool = True,
) -> int:
    async def chunks() -> AsyncIterator[bytes]:
        step = piece or len(data) or 1
        for at in range(0, len(data), step):
            yield data[at : at + step]

    request = ImportRequest("test.csv", list_ids, mode, status, column_map, trigger_flows=trigger_flows)
    async with db.transaction() as s:
        return (await imports.create_import(s, request, chunks())).id


async def run(db: Database, import_id: int, **kwargs: Any) -> Import:
    row = await imports.run_import(db, import_id, **kwargs)
    assert row is not None
    return row


async def report(db: Database, import_id: int) -> list[tuple[int, str]]:
    async with db.session() as s:
        return [(e.row, e.message) for e in await imports.import_errors(s, import_id, 100)]


async def people(db: Database) -> dict[str, Subscriber]:
    async with db.session() as s:
        return {r.email: r for r in (await s.execute(select(Subscriber))).scalars()}


async def memberships(db: Database) -> dict[tuple[str, int], SubscriptionStatus]:
    async with db.session() as s:
        rows = (
            await s.execute(
                select(Subscriber.email, Subscription.list_id, Subscription.status).join(
                    Subscriber, Subscriber.id == Subscription.subscriber_id
                )
            )
        ).all()
    return {(email, list_id): status for email, list_id, status in rows}


async def add_subscriber(
    db: Database,
    email: str,
    *,
    name: str = "",
    attributes: dict[str, Any] | None = None,
    list_ids: Sequence[int] = (),
    subscription_status: SubscriptionStatus | None = None,
    status: SubscriberStatus | None = None,
) -> None:
    async with db.transaction() as s:
        await subscribers.create_subscriber(
            s,
            email,
            name=name,
            attributes=attributes,
            list_ids=list_ids,
            status=status,
            subscription_status=subscription_status,
        )
