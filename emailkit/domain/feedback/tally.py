"""What a batch of stored events adds to the counters, worked out in memory: per-campaign totals (and per A/B
test variant, for events about a delivery of one), the hourly timeline, clicks per link, and the first
sightings (a recipient's first open, click, bounce...) that the unique and once-per-recipient counters count.

:mod:`.storage` records the first-seen markers and writes the counters; the rules of what counts are here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from emailkit.db.tables.feedback import COUNTERS as COUNTERS
from emailkit.db.tables.feedback import EventType
from emailkit.domain.feedback.types import (
    MARKER_BOUNCED,
    MARKER_CLICK,
    MARKER_COMPLAINED,
    MARKER_OPEN,
    MARKER_UNSUBSCRIBED,
    Pending,
    link_marker,
    url_hash,
)

# Which counter a first-seen marker of each event type feeds. Deliveries need none: a provider reports one
# per message and retries are already deduplicated, and they are a third of all events.
FIRST_MARKER = {
    EventType.BOUNCE: MARKER_BOUNCED,
    EventType.COMPLAINT: MARKER_COMPLAINED,
    EventType.OPEN: MARKER_OPEN,
    EventType.CLICK: MARKER_CLICK,
    EventType.UNSUBSCRIBE: MARKER_UNSUBSCRIBED,
}
# Counted once per recipient, whatever the number of events.
_ONCE = {MARKER_BOUNCED: "bounced", MARKER_COMPLAINED: "complained", MARKER_UNSUBSCRIBED: "unsubscribed"}
_UNIQUE = {MARKER_OPEN: "unique_opens", MARKER_CLICK: "unique_clicks"}
_TOTAL = {EventType.OPEN: "opens", EventType.CLICK: "clicks", EventType.DELIVERED: "delivered"}


@dataclass
class LinkDelta:
    url: str
    clicks: int = 0
    unique_clicks: int = 0


def _counters() -> defaultdict[str, int]:
    return defaultdict(int)


@dataclass
class Deltas:
    stats: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(_counters))
    # The same counters per (campaign, variant) of an A/B test; a recipient's delivery has one variant, so a
    # first sighting for the campaign is one for its variant too.
    variants: dict[tuple[int, int], dict[str, int]] = field(default_factory=lambda: defaultdict(_counters))
    links: dict[tuple[int, str], LinkDelta] = field(default_factory=dict)
    timeline: dict[tuple[int, datetime, EventType], int] = field(default_factory=lambda: defaultdict(int))
    # The workspace of each counted campaign: every counter row is written in its campaign's workspace.
    workspaces: dict[int, int] = field(default_factory=dict)


# A first sighting: (campaign, recipient, marker).
Marker = tuple[int, int, int]
# A stored row that can be a first sighting: (row, campaign, recipient, link hash, markers).
Planned = tuple[Pending, int, int | None, str | None, tuple[int, ...]]


def count_totals(rows: Sequence[Pending], deltas: Deltas) -> tuple[list[Planned], set[Marker]]:
    """Count what needs no first-seen marker (totals, timeline); plan the rows that do, and collect their
    markers to record."""
    plan: list[Planned] = []
    wanted: set[Marker] = set()
    hashes: dict[str, str] = {}
    hours: dict[datetime, datetime] = {}
    stats_by_campaign = deltas.stats
    stats_by_variant = deltas.variants
    timeline = deltas.timeline
    workspaces = deltas.workspaces
    click = EventType.CLICK
    for r in rows:
        cid = r.campaign_id
        if cid is None:
            continue
        workspaces[cid] = r.workspace_id
        stats = stats_by_campaign[cid]
        total = _TOTAL.get(r.type)
        if total is not None:
            stats[total] += 1
            if r.variant_id is not None:
                stats_by_variant[(cid, r.variant_id)][total] += 1
        at = r.occurred_at
        hour = hours.get(at)
        if hour is None:
            hour = hours[at] = at.replace(minute=0, second=0, microsecond=0)
        timeline[(cid, hour, r.type)] += 1
        code = FIRST_MARKER.get(r.type)
        if code is None:
            continue
        link = None
        if r.type is click and r.url:
            link = hashes.get(r.url)
            if link is None:
                link = hashes[r.url] = url_hash(r.url)
        markers = (code, link_marker(link)) if link else (code,)
        recipient = r.recipient
        if recipient is not None:
            for m in markers:
                wanted.add((cid, recipient, m))
        plan.append((r, cid, recipient, link, markers))
    return plan, wanted


def count_firsts(deltas: Deltas, plan: list[Planned], fresh: set[Marker]) -> None:
    """Count the planned rows' markers: once per recipient, unique opens and clicks, and clicks per link."""
    stats_by_campaign = deltas.stats
    for r, cid, recipient, link, markers in plan:
        stats = stats_by_campaign[cid]
        for marker in markers:
            # Anonymous hits have no recipient: they count in totals, never as unique.
            first = False
            if recipient is not None:
                key = (cid, recipient, marker)
                if key in fresh:
                    fresh.discard(key)
                    first = True
            counter = None
            if marker in _ONCE:
                # Without a recipient there is nothing to deduplicate on, so the event counts.
                if first or recipient is None:
                    counter = _ONCE[marker]
            elif marker in _UNIQUE:
                if first:
                    counter = _UNIQUE[marker]
            elif link is not None and r.url:
                _count_link_click(deltas, cid, link, r.url, first)
            if counter is not None:
                stats[counter] += 1
                if r.variant_id is not None:
                    deltas.variants[(cid, r.variant_id)][counter] += 1


def _count_link_click(deltas: Deltas, cid: int, link: str, url: str, first: bool) -> None:
    delta = deltas.links.get((cid, link))
    if delta is None:
        delta = deltas.links[(cid, link)] = LinkDelta(url=url)
    delta.clicks += 1
    if first:
        delta.unique_clicks += 1
