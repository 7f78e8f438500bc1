"""Storing a batch: dedupe keys, event rows, first-seen markers and the counters, a few statements per batch.

Rows that several concurrent batches may touch (keys, markers, counters) are written in a stable order so
two transactions never wait on each other in opposite orders. The counters come last, so the hot
per-campaign rows stay locked for as short a time as possible.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.events import EventType
from emailkit.domain.feedback.sql import dialect_of, upsert
from emailkit.domain.feedback.types import Pending, url_hash
from emailkit.domain.models_feedback import (
    CampaignFirst,
    CampaignLink,
    CampaignStats,
    CampaignTimeline,
    Event,
    EventKey,
)

# Which counter a first-seen marker of each event type feeds.
FIRST_KIND = {
    EventType.DELIVERED: "delivered",
    EventType.BOUNCE: "bounced",
    EventType.COMPLAINT: "complained",
    EventType.OPEN: "open",
    EventType.CLICK: "click",
    EventType.UNSUBSCRIBE: "unsubscribed",
}
# Counted once per recipient, whatever the number of events.
_ONCE = {
    "delivered": "delivered",
    "bounced": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}
_UNIQUE = {"open": "unique_opens", "click": "unique_clicks"}
_TOTAL = {EventType.OPEN: "opens", EventType.CLICK: "clicks"}
COUNTERS = (
    "delivered",
    "bounced",
    "complained",
    "opens",
    "unique_opens",
    "clicks",
    "unique_clicks",
    "unsubscribed",
)


@dataclass
class LinkDelta:
    url: str
    clicks: int = 0
    unique_clicks: int = 0


@dataclass
class Deltas:
    stats: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    links: dict[tuple[int, str], LinkDelta] = field(default_factory=dict)
    timeline: Counter[tuple[int, datetime, EventType]] = field(default_factory=Counter)


async def keep_new(session: AsyncSession, rows: Sequence[Pending], now: datetime) -> list[Pending]:
    """The rows whose dedupe key was never seen (rows without a key are always new); records the keys."""
    keys = sorted({r.dedupe_key for r in rows if r.dedupe_key is not None})
    fresh: set[str] = set()
    if keys:
        if dialect_of(session) == "postgresql":
            result = await session.execute(
                text(
                    "INSERT INTO event_keys (key, seen_at) SELECT k, :now FROM unnest(CAST(:keys AS uuid[])) AS k "
                    "ON CONFLICT DO NOTHING RETURNING replace(key::text, '-', '')"
                ),
                {"keys": keys, "now": now},
            )
        else:
            stmt = upsert(session)(EventKey).on_conflict_do_nothing().returning(EventKey.key)
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


_PG_INSERT_EVENTS = text(
    """
    INSERT INTO events (occurred_at, recorded_at, type, bounce_type, provider, provider_message_id, email,
                        campaign_id, delivery_id, subscriber_id, url, user_agent, ip, reason, metadata, dedupe_key)
    SELECT t.occurred_at, :now, t.type, t.bounce_type, t.provider, t.provider_message_id, t.email,
           t.campaign_id, t.delivery_id, t.subscriber_id, t.url, t.user_agent, t.ip, t.reason,
           CAST(t.metadata AS jsonb), t.dedupe_key
    FROM unnest(
        CAST(:occurred_at AS timestamptz[]), CAST(:type AS varchar[]), CAST(:bounce_type AS varchar[]),
        CAST(:provider AS varchar[]), CAST(:provider_message_id AS varchar[]), CAST(:email AS varchar[]),
        CAST(:campaign_id AS bigint[]), CAST(:delivery_id AS bigint[]), CAST(:subscriber_id AS bigint[]),
        CAST(:url AS text[]), CAST(:user_agent AS text[]), CAST(:ip AS varchar[]), CAST(:reason AS text[]),
        CAST(:metadata AS text[]), CAST(:dedupe_key AS uuid[])
    ) AS t(occurred_at, type, bounce_type, provider, provider_message_id, email, campaign_id, delivery_id,
           subscriber_id, url, user_agent, ip, reason, metadata, dedupe_key)
    """
)


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None and len(value) > limit else value


async def insert_events(session: AsyncSession, rows: Sequence[Pending], now: datetime) -> None:
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        # One statement with one array per column: far cheaper than a row-per-parameter-set executemany.
        await session.execute(
            _PG_INSERT_EVENTS,
            {
                "now": now,
                "occurred_at": [r.occurred_at for r in rows],
                "type": [r.type.value for r in rows],
                "bounce_type": [r.bounce_type.value if r.bounce_type else None for r in rows],
                "provider": [r.provider[:32] for r in rows],
                "provider_message_id": [_clip(r.provider_message_id, 255) for r in rows],
                "email": [_clip(r.email, 320) for r in rows],
                "campaign_id": [r.campaign_id for r in rows],
                "delivery_id": [r.delivery_id for r in rows],
                "subscriber_id": [r.subscriber_id for r in rows],
                "url": [r.url for r in rows],
                "user_agent": [r.user_agent for r in rows],
                "ip": [_clip(r.ip, 64) for r in rows],
                "reason": [r.reason for r in rows],
                "metadata": [json.dumps(r.metadata) if r.metadata else None for r in rows],
                "dedupe_key": [r.dedupe_key for r in rows],
            },
        )
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
            }
            for r in rows
        ],
    )


def _markers(row: Pending) -> list[str]:
    kind = FIRST_KIND.get(row.type)
    if kind is None:
        return []
    if row.type is EventType.CLICK and row.url:
        return [kind, "link:" + url_hash(row.url)]
    return [kind]


async def _first_seen(session: AsyncSession, wanted: set[tuple[int, str, str]]) -> set[tuple[int, str, str]]:
    if not wanted:
        return set()
    ordered = sorted(wanted)
    if dialect_of(session) == "postgresql":
        result = await session.execute(
            text(
                "INSERT INTO campaign_firsts (campaign_id, kind, recipient) "
                "SELECT * FROM unnest(CAST(:c AS bigint[]), CAST(:k AS varchar[]), CAST(:r AS varchar[])) "
                "ON CONFLICT DO NOTHING RETURNING campaign_id, kind, recipient"
            ),
            {"c": [m[0] for m in ordered], "k": [m[1] for m in ordered], "r": [m[2] for m in ordered]},
        )
    else:
        stmt = (
            upsert(session)(CampaignFirst)
            .on_conflict_do_nothing()
            .returning(CampaignFirst.campaign_id, CampaignFirst.kind, CampaignFirst.recipient)
        )
        result = await session.execute(
            stmt, [{"campaign_id": c, "kind": k, "recipient": r} for c, k, r in ordered]
        )
    return {(int(c), str(k), str(r)) for c, k, r in result.all()}


async def count(session: AsyncSession, rows: Sequence[Pending]) -> Deltas:
    """Work out what the stored rows add to each campaign's counters (marking first sightings)."""
    deltas = Deltas()
    counted = [r for r in rows if r.campaign_id is not None]
    wanted: set[tuple[int, str, str]] = set()
    for r in counted:
        recipient = r.recipient
        if recipient is not None:
            assert r.campaign_id is not None
            wanted.update((r.campaign_id, kind, recipient) for kind in _markers(r))
    fresh = await _first_seen(session, wanted)
    for r in counted:
        cid = r.campaign_id
        assert cid is not None
        stats = deltas.stats[cid]
        recipient = r.recipient
        if (total := _TOTAL.get(r.type)) is not None:
            stats[total] += 1
        for kind in _markers(r):
            # Anonymous hits have no recipient: they count in totals, never as unique.
            first = recipient is not None and (cid, kind, recipient) in fresh
            if first:
                fresh.discard((cid, kind, recipient))
            if kind in _ONCE:
                # Without a recipient there is nothing to deduplicate on, so the event counts.
                stats[_ONCE[kind]] += 1 if first or recipient is None else 0
            elif kind in _UNIQUE:
                stats[_UNIQUE[kind]] += 1 if first else 0
            elif r.url:
                link = deltas.links.setdefault((cid, url_hash(r.url)), LinkDelta(url=r.url))
                link.clicks += 1
                link.unique_clicks += 1 if first else 0
        deltas.timeline[(cid, r.occurred_at.replace(minute=0, second=0, microsecond=0), r.type)] += 1
    return deltas


async def apply_links_and_timeline(session: AsyncSession, deltas: Deltas) -> None:
    if deltas.links:
        table = CampaignLink.__table__
        stmt = upsert(session)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.campaign_id, table.c.url_hash],
            set_={
                "clicks": table.c.clicks + stmt.excluded.clicks,
                "unique_clicks": table.c.unique_clicks + stmt.excluded.unique_clicks,
            },
        )
        await session.execute(
            stmt,
            [
                {
                    "campaign_id": cid,
                    "url_hash": h,
                    "url": d.url,
                    "clicks": d.clicks,
                    "unique_clicks": d.unique_clicks,
                }
                for (cid, h), d in sorted(deltas.links.items())
            ],
        )
    if deltas.timeline:
        table = CampaignTimeline.__table__
        stmt = upsert(session)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.campaign_id, table.c.bucket, table.c.type],
            set_={"count": table.c.count + stmt.excluded["count"]},
        )
        await session.execute(
            stmt,
            [
                {"campaign_id": cid, "bucket": bucket, "type": type_, "count": n}
                for (cid, bucket, type_), n in sorted(deltas.timeline.items())
            ],
        )


async def apply_stats(session: AsyncSession, deltas: Deltas, now: datetime) -> dict[int, dict[str, int]]:
    """Add the deltas to each campaign's counters; returns the counters after the update."""
    after: dict[int, dict[str, int]] = {}
    table = CampaignStats.__table__
    for cid in sorted(deltas.stats):
        delta = deltas.stats[cid]
        values: dict[str, Any] = {name: delta.get(name, 0) for name in COUNTERS}
        stmt = upsert(session)(table).values(campaign_id=cid, updated_at=now, **values)
        set_: dict[str, Any] = {name: table.c[name] + stmt.excluded[name] for name in COUNTERS}
        set_["updated_at"] = stmt.excluded.updated_at
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.campaign_id], set_=set_).returning(
            *(table.c[name] for name in COUNTERS)
        )
        row = (await session.execute(stmt)).one()
        after[cid] = {name: int(row._mapping[name]) for name in COUNTERS}
    return after
