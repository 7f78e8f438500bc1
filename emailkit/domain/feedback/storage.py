"""Storing a batch: dedupe keys, event rows, first-seen markers and the counters, a few statements per batch
(what the counters gain is worked out in :mod:`.tally`).

Rows that several concurrent batches may touch (keys, markers, counters) are written in a stable order so
two transactions never wait on each other in opposite orders. The counters come last, so the hot
per-campaign rows stay locked for as short a time as possible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, pg_driver, upsert
from emailkit.db.tables.feedback import (
    CampaignFirst,
    CampaignLink,
    CampaignStats,
    CampaignTimeline,
    CampaignVariantStats,
    Event,
    EventKey,
)
from emailkit.domain.feedback import tally
from emailkit.domain.feedback.tally import COUNTERS, Deltas, Marker
from emailkit.domain.feedback.types import Pending

# Lists travel as one comma-joined text parameter: encoding a thousand-element array parameter costs the
# driver far more than splitting one string costs the server. (Keys, ids and marker parts hold no commas.)
_PG_KEEP_NEW = (
    "INSERT INTO event_keys (key, seen_at) SELECT k, $2 FROM unnest(string_to_array($1, ',')::uuid[]) AS k "
    "ON CONFLICT DO NOTHING RETURNING replace(key::text, '-', '')"
)


async def keep_new(session: AsyncSession, rows: Sequence[Pending], now: datetime) -> list[Pending]:
    """The rows whose dedupe key was never seen (rows without a key are always new); records the keys."""
    keys = sorted({r.dedupe_key for r in rows if r.dedupe_key is not None})
    fresh: set[str] = set()
    if keys:
        if dialect_of(session) == "postgresql":
            driver = await pg_driver(session)
            fresh = {r[0] for r in await driver.fetch(_PG_KEEP_NEW, ",".join(keys), now)}
        else:
            stmt = upsert(session)(EventKey.__table__).on_conflict_do_nothing().returning(EventKey.key)
            result = await session.execute(stmt, [{"key": k, "seen_at": now} for k in keys])
            fresh = {str(k).replace("-", "") for k in result.scalars()}
    new: list[Pending] = []
    for r in rows:
        if r.dedupe_key is None:
            new.append(r)
        elif r.dedupe_key in fresh:
            # A second copy inside the same batch is a duplicate too.
            fresh.discard(r.dedupe_key)
            new.append(r)
    return new


# Row-level security refuses COPY FROM, so the rows travel as one array per column (binary encoded by the
# driver) and PostgreSQL routes each to its month's partition.
_PG_EVENTS = """
INSERT INTO events (occurred_at, recorded_at, type, bounce_type, provider, provider_message_id, email,
                    campaign_id, delivery_id, subscriber_id, url, user_agent, ip, reason, metadata, dedupe_key,
                    workspace_id)
SELECT u.occurred_at, $2, u.type, u.bounce_type, u.provider, u.pmid, u.email, u.campaign_id, u.delivery_id,
       u.subscriber_id, u.url, u.user_agent, u.ip, u.reason, u.meta::jsonb, u.dedupe_key::uuid, u.workspace_id
FROM unnest($1::timestamptz[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[], $7::varchar[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::varchar[], $14::text[],
            $15::text[], $16::text[], $17::bigint[])
    AS u(occurred_at, type, bounce_type, provider, pmid, email, campaign_id, delivery_id, subscriber_id, url,
         user_agent, ip, reason, meta, dedupe_key, workspace_id)
"""


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None and len(value) > limit else value


def _event_columns(rows: Sequence[Pending]) -> list[list[Any]]:
    """The parameters of _PG_EVENTS after $2, one list per column. The columns are bounded; providers'
    strings are not (one long value must not fail a batch)."""
    dumps = json.dumps
    return [
        [r.type for r in rows],  # StrEnums: the driver sends them as text
        [r.bounce_type for r in rows],
        [r.provider[:32] for r in rows],
        [_clip(r.provider_message_id, 255) for r in rows],
        [_clip(r.email, 320) for r in rows],
        [r.campaign_id for r in rows],
        [r.delivery_id for r in rows],
        [r.subscriber_id for r in rows],
        [r.url for r in rows],
        [r.user_agent for r in rows],
        [_clip(r.ip, 64) for r in rows],
        [r.reason for r in rows],
        [dumps(r.metadata) if r.metadata else None for r in rows],
        [r.dedupe_key for r in rows],
        [r.workspace_id for r in rows],
    ]


async def insert_events(session: AsyncSession, rows: Sequence[Pending], now: datetime) -> None:
    """Store the rows, each in its workspace (set by correlation)."""
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        await driver.execute(_PG_EVENTS, [r.occurred_at for r in rows], now, *_event_columns(rows))
        return
    await session.execute(
        insert(Event),
        [
            {
                "occurred_at": r.occurred_at,
                "recorded_at": now,
                "type": r.type,
                "bounce_type": r.bounce_type,
                "provider": r.provider[:32],
                "provider_message_id": _clip(r.provider_message_id, 255),
                "email": _clip(r.email, 320),
                "campaign_id": r.campaign_id,
                "delivery_id": r.delivery_id,
                "subscriber_id": r.subscriber_id,
                "url": r.url,
                "user_agent": r.user_agent,
                "ip": _clip(r.ip, 64),
                "reason": r.reason,
                "meta": r.metadata,
                "dedupe_key": r.dedupe_key,
                "workspace_id": r.workspace_id,
            }
            for r in rows
        ],
    )


_PG_FIRST_SEEN = (
    "INSERT INTO campaign_firsts (campaign_id, recipient, marker, workspace_id) "
    "SELECT * FROM unnest(string_to_array($1, ',')::bigint[], string_to_array($2, ',')::bigint[], "
    "string_to_array($3, ',')::bigint[], string_to_array($4, ',')::bigint[]) "
    "ON CONFLICT DO NOTHING RETURNING campaign_id, recipient, marker"
)


async def _first_seen(session: AsyncSession, wanted: set[Marker], workspaces: dict[int, int]) -> set[Marker]:
    """Record the (campaign, recipient, marker) triples, each in its campaign's workspace; returns those that
    were not recorded before."""
    if not wanted:
        return set()
    ordered = sorted(wanted)
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        c, r, m = (",".join(map(str, column)) for column in zip(*ordered, strict=True))
        w = ",".join([str(workspaces[cid]) for cid, _, _ in ordered])
        return {(row[0], row[1], row[2]) for row in await driver.fetch(_PG_FIRST_SEEN, c, r, m, w)}
    table = CampaignFirst.__table__
    stmt = (
        upsert(session)(table)
        .on_conflict_do_nothing()
        .returning(table.c.campaign_id, table.c.recipient, table.c.marker)
    )
    result = await session.execute(
        stmt,
        [
            {"campaign_id": c, "recipient": r, "marker": m, "workspace_id": workspaces[c]}
            for c, r, m in ordered
        ],
    )
    return {(int(c), int(r), int(m)) for c, r, m in result.all()}


async def count(session: AsyncSession, rows: Sequence[Pending]) -> Deltas:
    """Work out what the stored rows add to each campaign's counters (marking first sightings)."""
    deltas = Deltas()
    plan, wanted = tally.count_totals(rows, deltas)
    tally.count_firsts(deltas, plan, await _first_seen(session, wanted, deltas.workspaces))
    return deltas


_PG_LINKS = """
INSERT INTO campaign_links AS l (campaign_id, url_hash, url, clicks, unique_clicks, workspace_id)
SELECT * FROM unnest($1::bigint[], $2::varchar[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
ON CONFLICT (campaign_id, url_hash)
DO UPDATE SET clicks = l.clicks + excluded.clicks, unique_clicks = l.unique_clicks + excluded.unique_clicks
"""
_PG_TIMELINE = """
INSERT INTO campaign_timeline AS t (campaign_id, bucket, type, count, workspace_id)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::varchar[], $4::bigint[], $5::bigint[])
ON CONFLICT (campaign_id, bucket, type) DO UPDATE SET count = t.count + excluded.count
"""


def _counters_upsert(table: str, keys: tuple[str, ...], *, returning: bool) -> str:
    """The statement adding a batch's counters to `table`'s rows (made when missing, in the workspace given).

    Parameters: one bigint array per key column, the time, one array per counter in COUNTERS order, then the
    workspaces. Written out from COUNTERS so that the campaign's and the variants' counters cannot drift."""
    k = len(keys)
    arrays = [f"${i + 1}::bigint[]" for i in range(k)]
    arrays += [f"${k + 2 + i}::bigint[]" for i in range(len(COUNTERS))]
    arrays.append(f"${k + 2 + len(COUNTERS)}::bigint[]")
    key_names, aliases, names = ", ".join(keys), [f"k{i}" for i in range(k)], ", ".join(COUNTERS)
    adds = ",\n    ".join(f"{c} = s.{c} + excluded.{c}" for c in COUNTERS)
    statement = (
        f"INSERT INTO {table} AS s ({key_names}, updated_at, {names}, workspace_id)\n"
        f"SELECT {', '.join('u.' + a for a in aliases)}, ${k + 1}, {', '.join('u.' + c for c in COUNTERS)}, u.w\n"
        f"FROM unnest({', '.join(arrays)}) AS u({', '.join(aliases)}, {names}, w)\n"
        f"ON CONFLICT ({key_names}) DO UPDATE SET\n    updated_at = excluded.updated_at,\n    {adds}"
    )
    return statement + (f"\nRETURNING {keys[0]}, {names}" if returning else "")


_PG_STATS = _counters_upsert("campaign_stats", ("campaign_id",), returning=True)
_PG_VARIANT_STATS = _counters_upsert("campaign_variant_stats", ("campaign_id", "variant_id"), returning=False)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def apply_links_and_timeline(session: AsyncSession, deltas: Deltas) -> None:
    """Add the clicks per link and the events per hour, each row in its campaign's workspace."""
    ws = deltas.workspaces
    links = [
        (cid, h, d.url, d.clicks, d.unique_clicks, ws[cid]) for (cid, h), d in sorted(deltas.links.items())
    ]
    timeline = [
        (cid, bucket, type_, n, ws[cid]) for (cid, bucket, type_), n in sorted(deltas.timeline.items())
    ]
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        if links:
            await driver.execute(_PG_LINKS, *_columns(links))
        if timeline:
            await driver.execute(_PG_TIMELINE, *_columns(timeline))
        return
    if links:
        table = CampaignLink.__table__
        stmt = upsert(session)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.campaign_id, table.c.url_hash],
            set_={
                "clicks": table.c.clicks + stmt.excluded.clicks,
                "unique_clicks": table.c.unique_clicks + stmt.excluded.unique_clicks,
            },
        )
        link_names = ("campaign_id", "url_hash", "url", "clicks", "unique_clicks", "workspace_id")
        await session.execute(stmt, [dict(zip(link_names, row, strict=True)) for row in links])
    if timeline:
        table = CampaignTimeline.__table__
        stmt = upsert(session)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.campaign_id, table.c.bucket, table.c.type],
            set_={"count": table.c.count + stmt.excluded["count"]},
        )
        bucket_names = ("campaign_id", "bucket", "type", "count", "workspace_id")
        await session.execute(stmt, [dict(zip(bucket_names, row, strict=True)) for row in timeline])


async def apply_stats(session: AsyncSession, deltas: Deltas, now: datetime) -> dict[int, dict[str, int]]:
    """Add the deltas to each campaign's counters, then to its A/B test variants' (a new counter row in its
    campaign's workspace); returns the campaigns' counters after the update."""
    after = await _apply_campaign_stats(session, deltas, now)
    await _apply_variant_stats(session, deltas, now)
    return after


async def _apply_variant_stats(session: AsyncSession, deltas: Deltas, now: datetime) -> None:
    """One statement for every variant counted in the batch (after the campaigns' rows, in a stable order,
    as every batch writes them: two batches never wait on each other in opposite orders)."""
    keys = sorted(deltas.variants)
    if not keys:
        return
    workspaces = [deltas.workspaces[cid] for cid, _ in keys]
    per_counter = [[deltas.variants[key].get(name, 0) for key in keys] for name in COUNTERS]
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        campaigns, variants = ([key[i] for key in keys] for i in (0, 1))
        await driver.execute(_PG_VARIANT_STATS, campaigns, variants, now, *per_counter, workspaces)
        return
    table = CampaignVariantStats.__table__
    stmt = upsert(session)(table)
    set_: dict[str, Any] = {name: table.c[name] + stmt.excluded[name] for name in COUNTERS}
    set_["updated_at"] = stmt.excluded.updated_at
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.campaign_id, table.c.variant_id], set_=set_)
    await session.execute(
        stmt,
        [
            {
                "campaign_id": cid,
                "variant_id": vid,
                "updated_at": now,
                "workspace_id": workspaces[i],
                **{name: per_counter[n][i] for n, name in enumerate(COUNTERS)},
            }
            for i, (cid, vid) in enumerate(keys)
        ],
    )


async def _apply_campaign_stats(
    session: AsyncSession, deltas: Deltas, now: datetime
) -> dict[int, dict[str, int]]:
    campaigns = sorted(deltas.stats)
    if not campaigns:
        return {}
    if dialect_of(session) == "postgresql":
        driver = await pg_driver(session)
        per_counter = [[deltas.stats[cid].get(name, 0) for cid in campaigns] for name in COUNTERS]
        workspaces = [deltas.workspaces[cid] for cid in campaigns]
        rows = await driver.fetch(_PG_STATS, campaigns, now, *per_counter, workspaces)
        return {row[0]: {name: int(row[i + 1]) for i, name in enumerate(COUNTERS)} for row in rows}
    after: dict[int, dict[str, int]] = {}
    table = CampaignStats.__table__
    for cid in campaigns:
        delta = deltas.stats[cid]
        values: dict[str, Any] = {name: delta.get(name, 0) for name in COUNTERS}
        stmt = upsert(session)(table).values(
            campaign_id=cid, updated_at=now, workspace_id=deltas.workspaces[cid], **values
        )
        set_: dict[str, Any] = {name: table.c[name] + stmt.excluded[name] for name in COUNTERS}
        set_["updated_at"] = stmt.excluded.updated_at
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.campaign_id], set_=set_).returning(
            *(table.c[name] for name in COUNTERS)
        )
        row = (await session.execute(stmt)).one()
        after[cid] = {name: int(row._mapping[name]) for name in COUNTERS}
    return after
