"""Loading an import's checked, staged rows: the upserts of subscribers and their subscriptions.

Subscribers and subscriptions are only ever written inside the import's one transaction, so a failure anywhere
leaves nothing behind. On SQLite the staged rows are loaded in chunks with ``INSERT ... ON CONFLICT``
(`load`). On PostgreSQL the transaction loads each ready range with one statement: a plain INSERT of the new
addresses and an UPDATE of the known ones, feeding the subscriptions insert (`load_range`), or
``INSERT ... ON CONFLICT`` when another writer got in the way (``conflict_safe``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from emailkit.db.tables.audience import (
    ImportMode,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from emailkit.db.types import UTCDateTime
from emailkit.domain.audience.imports.staging import in_range, row_range
from emailkit.domain.audience.lists import new_subscription_status


@dataclass
class LoadOptions:
    import_id: int
    # Every statement here is Core on a connection: the session's filter does not reach them, so each names
    # the import's workspace itself (rows it writes, rows it matches by address, lists it subscribes to).
    workspace_id: int
    mode: ImportMode
    list_ids: Sequence[int]
    subscription_status: SubscriptionStatus | None
    now: datetime
    max_errors: int
    chunk_rows: int
    # INSERT ... ON CONFLICT for every chunk, right whatever other writers do meanwhile.
    conflict_safe: bool = False


@dataclass
class Outcome:
    inserted: int = 0
    updated: int = 0
    existing_skipped: int = 0


def _eligible(status: Any, options: LoadOptions) -> ColumnElement[bool]:
    # Blocklisted people are never subscribed, though recording that they are unsubscribed is fine.
    if options.subscription_status is SubscriptionStatus.UNSUBSCRIBED:
        return literal(True)
    enabled: ColumnElement[bool] = status == SubscriberStatus.ENABLED.value
    return enabled


SUBSCRIPTION_COLUMNS = ["subscriber_id", "list_id", "status", "created_at", "updated_at", "workspace_id"]
SUBSCRIBER_COLUMNS = ["email", "name", "attributes", "status", "created_at", "updated_at", "workspace_id"]


def _subscriptions_insert(dialect_insert: Any, source: Any, options: LoadOptions) -> Any:
    table = Subscription.__table__
    stmt = dialect_insert(table).from_select(SUBSCRIPTION_COLUMNS, source)
    if options.mode is ImportMode.UPSERT and options.subscription_status is not None:
        # An explicit status may only move a subscription towards less mail or a confirmed opt-in: an import
        # never re-subscribes someone who unsubscribed.
        return stmt.on_conflict_do_update(
            index_elements=[table.c.subscriber_id, table.c.list_id],
            set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
            where=or_(
                and_(
                    stmt.excluded.status == SubscriptionStatus.UNSUBSCRIBED.value,
                    table.c.status != SubscriptionStatus.UNSUBSCRIBED.value,
                ),
                and_(
                    stmt.excluded.status == SubscriptionStatus.CONFIRMED.value,
                    table.c.status == SubscriptionStatus.UNCONFIRMED.value,
                ),
            ),
        )
    return stmt.on_conflict_do_nothing(index_elements=[table.c.subscriber_id, table.c.list_id])


def _subscribers_insert(dialect_insert: Any, source: Any, options: LoadOptions, merge: Any) -> Any:
    table = Subscriber.__table__
    stmt = dialect_insert(table).from_select(SUBSCRIBER_COLUMNS, source)
    # An address is unique within its workspace: another workspace's subscriber is never a conflict.
    unique = [table.c.workspace_id, table.c.email]
    if options.mode is ImportMode.SKIP_EXISTING:
        return stmt.on_conflict_do_nothing(index_elements=unique)
    return stmt.on_conflict_do_update(
        index_elements=unique,
        set_={
            # An empty name cell leaves the name alone; attributes are merged, the file winning.
            "name": case((stmt.excluded.name == "", table.c.name), else_=stmt.excluded.name),
            "attributes": merge(table.c.attributes, stmt.excluded.attributes),
            "updated_at": stmt.excluded.updated_at,
        },
    )


def _workspace(options: LoadOptions) -> ColumnElement[int]:
    return literal(options.workspace_id, BigInteger())


def _staged_subscribers(st: Table, options: LoadOptions, lo: int, hi: int) -> Any:
    now = literal(options.now, UTCDateTime())
    return select(
        st.c.email,
        st.c.name,
        st.c.attributes,
        literal(SubscriberStatus.ENABLED.value),
        now,
        now,
        _workspace(options),
    ).where(st.c.error.is_(None), st.c.row_no.between(lo, hi))


async def load(
    conn: AsyncConnection, st: Table, options: LoadOptions, hook: Callable[[Outcome], Awaitable[None]]
) -> Outcome:
    """SQLite: upsert the staged rows in row-number chunks (`hook` after each); returns what happened to them."""
    lo, hi = await row_range(conn, st)
    return await _load_sqlite(conn, st, options, lo, hi, hook)


async def mark_existing(
    conn: AsyncConnection, st: Table, workspace_id: int, lo: int | None = None, hi: int | None = None
) -> None:
    """Flag staged rows whose address is already a subscriber of the workspace (one semi-join, instead of a
    conflict per row)."""
    known = select(Subscriber.email).where(Subscriber.workspace_id == workspace_id)
    await conn.execute(
        update(st)
        .values(existing=True)
        .where(in_range(st, lo, hi), st.c.error.is_(None), st.c.email.in_(known))
    )


class ConflictRetry(Exception):
    """Another writer changed addresses this import had flagged: roll the import back and run it again with
    ``conflict_safe`` (rare; it costs a second pass, and a savepoint per chunk would cost every import)."""


class _StaleFlags(Exception):
    """A staged row's ``existing`` flag no longer holds (another writer added or removed that address)."""


def _staged_in(st: Table, start: int, end: int) -> ColumnElement[bool]:
    return and_(st.c.error.is_(None), st.c.row_no.between(start, end))


def _import_lists(options: LoadOptions) -> ColumnElement[bool]:
    return and_(MailingList.id.in_(list(options.list_ids)), MailingList.workspace_id == options.workspace_id)


def _pairs(source: Any, options: LoadOptions) -> Any:
    """(subscriber, list) pairs to subscribe for the rows a CTE returned (id, status)."""
    now = literal(options.now, UTCDateTime())
    return (
        select(
            source.c.id,
            MailingList.id,
            new_subscription_status(options.subscription_status),
            now,
            now,
            _workspace(options),
        )
        .select_from(source)
        .join(MailingList, _import_lists(options))
        .where(_eligible(source.c.status, options))
    )


async def _load_chunk_flagged(
    conn: AsyncConnection, st: Table, options: LoadOptions, start: int, end: int
) -> tuple[int, int]:
    """One chunk by the ``existing`` flags: a plain INSERT of new addresses (and of their subscriptions, which
    cannot exist yet) and an UPDATE of known ones, skipping ``ON CONFLICT``'s speculative insertion (≈30% of
    the subscriber insert). Returns (inserted, updated); raises _StaleFlags, or the unique violation of a
    concurrent insert, when the flags are out of date."""
    table = Subscriber.__table__
    now = literal(options.now, UTCDateTime())
    in_chunk = _staged_in(st, start, end)
    new_rows = _staged_subscribers(st, options, start, end).where(st.c.existing.is_(False))
    inserted = (
        postgresql.insert(table)  # type: ignore[arg-type]
        .from_select(SUBSCRIBER_COLUMNS, new_rows)
        .returning(table.c.id, table.c.status)
        .cte("inserted")
    )
    ctes: list[Any] = [inserted]
    updated = None
    if options.mode is ImportMode.UPSERT:
        updated = (
            update(table)  # type: ignore[arg-type]
            .where(
                in_chunk,
                st.c.existing.is_(True),
                table.c.workspace_id == options.workspace_id,
                table.c.email == st.c.email,
            )
            .values(
                name=case((st.c.name == "", table.c.name), else_=st.c.name),
                attributes=func.emailkit_json_merge(table.c.attributes, st.c.attributes),
                updated_at=now,
            )
            .returning(table.c.id, table.c.status)
            .cte("updated")
        )
        ctes.append(updated)
    if options.list_ids:
        subscriptions = Subscription.__table__
        ctes.append(
            postgresql.insert(subscriptions)  # type: ignore[arg-type]
            .from_select(SUBSCRIPTION_COLUMNS, _pairs(inserted, options))
            .cte("subscribed_new")
        )
        if updated is not None:
            ctes.append(
                _subscriptions_insert(postgresql.insert, _pairs(updated, options), options).cte("subscribed")
            )
    flagged = select(func.count()).where(in_chunk, st.c.existing.is_(True)).scalar_subquery()
    counts = select(
        select(func.count()).select_from(inserted).scalar_subquery(),
        select(func.count()).select_from(updated).scalar_subquery() if updated is not None else literal(0),
        flagged,
    )
    for cte in ctes:
        counts = counts.add_cte(cte)
    fresh, touched, expected_existing = (await conn.execute(counts)).one()
    if updated is not None and touched != expected_existing:
        # A known subscriber vanished meanwhile: the row must be inserted after all, not dropped.
        raise _StaleFlags()
    return int(fresh), int(touched)


async def _load_chunk_upsert(
    conn: AsyncConnection, st: Table, options: LoadOptions, start: int, end: int
) -> tuple[int, int]:
    """One chunk with ``INSERT ... ON CONFLICT``: right whatever other writers do meanwhile."""
    table = Subscriber.__table__
    upsert = _subscribers_insert(
        postgresql.insert, _staged_subscribers(st, options, start, end), options, func.emailkit_json_merge
    ).returning(
        table.c.id,
        table.c.status,
        # xmax is 0 on a freshly inserted row version and set on one that ON CONFLICT updated.
        literal_column("(xmax = 0)").label("fresh"),
    )
    imported = upsert.cte("imported")
    counts = select(
        func.count().filter(imported.c.fresh).label("fresh"), func.count().label("all")
    ).select_from(imported)
    if options.list_ids:
        counts = counts.add_cte(
            _subscriptions_insert(postgresql.insert, _pairs(imported, options), options).cte("subscribed")
        )
    fresh, touched = (await conn.execute(counts)).one()
    return int(fresh), int(touched) - int(fresh)


async def load_range(conn: AsyncConnection, st: Table, options: LoadOptions, lo: int, hi: int) -> Outcome:
    """PostgreSQL: upsert the checked staged rows lo..hi; returns what happened to them."""
    ok_rows = int((await conn.execute(select(func.count()).where(_staged_in(st, lo, hi)))).scalar_one())
    if options.conflict_safe:
        fresh, updated = await _load_chunk_upsert(conn, st, options, lo, hi)
    else:
        await mark_existing(conn, st, options.workspace_id, lo, hi)
        # No savepoint per chunk (it would cost every import): stale flags roll the whole import back.
        try:
            fresh, updated = await _load_chunk_flagged(conn, st, options, lo, hi)
        except _StaleFlags as exc:
            raise ConflictRetry() from exc
        except IntegrityError as exc:
            if "uq_subscribers_workspace_id_email" not in str(exc.orig):
                raise
            raise ConflictRetry() from exc
    outcome = Outcome(inserted=fresh, updated=updated)
    if options.mode is ImportMode.SKIP_EXISTING:
        # Whatever was valid and not inserted already existed, and was skipped.
        outcome.existing_skipped = ok_rows - fresh
    return outcome


async def _load_sqlite(
    conn: AsyncConnection,
    st: Table,
    options: LoadOptions,
    lo: int,
    hi: int,
    hook: Callable[[Outcome], Awaitable[None]],
) -> Outcome:
    outcome = Outcome()
    await mark_existing(conn, st, options.workspace_id)
    skip_existing = options.mode is ImportMode.SKIP_EXISTING
    now = literal(options.now, UTCDateTime())
    for start in range(lo, hi + 1, options.chunk_rows):
        end = min(hi, start + options.chunk_rows - 1)
        in_chunk = _staged_in(st, start, end)
        valid, existing = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(cast(st.c.existing, Integer)), 0)).where(in_chunk)
            )
        ).one()
        source = _staged_subscribers(st, options, start, end)
        if skip_existing:
            source = source.where(st.c.existing.is_(False))
        await conn.execute(_subscribers_insert(sqlite.insert, source, options, func.json_patch))
        if options.list_ids:
            pairs = (
                select(
                    Subscriber.id,
                    MailingList.id,
                    new_subscription_status(options.subscription_status),
                    now,
                    now,
                    _workspace(options),
                )
                .select_from(st)
                .join(
                    Subscriber,
                    and_(Subscriber.workspace_id == options.workspace_id, Subscriber.email == st.c.email),
                )
                .join(MailingList, _import_lists(options))
                .where(in_chunk, _eligible(Subscriber.status, options))
            )
            if skip_existing:
                pairs = pairs.where(st.c.existing.is_(False))
            await conn.execute(_subscriptions_insert(sqlite.insert, pairs, options))
        outcome.inserted += int(valid) - int(existing)
        if skip_existing:
            outcome.existing_skipped += int(existing)
        else:
            outcome.updated += int(existing)
        await hook(outcome)
    return outcome
