"""Saved segments and what uses a filter: create, update, delete and list segments; preview, count and
page the subscribers a filter matches; and the segments a campaign targets, whose definitions are recorded
when it starts (later edits no longer change its audience).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of
from emailkit.db.tables.audience import Segment, Subscriber
from emailkit.db.tables.sending import FINAL_CAMPAIGN_STATUSES, Campaign, CampaignSegment
from emailkit.db.types import utcnow
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.filter import SubscriberFilter, filter_to_dict
from emailkit.domain.audience.segments.validate import parse_filter, validate_filter
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, raise_if, require

SAMPLE_SIZE = 10
MAX_SEGMENTS_PER_CAMPAIGN = 50


# --- using a filter ---------------------------------------------------------------------------------------


@dataclass
class Preview:
    count: int
    sample: list[Subscriber]


async def count_matching(
    session: AsyncSession, spec: SubscriberFilter, *, now: datetime | None = None
) -> int:
    clause = compile_filter(spec, dialect_of(session), now=now or utcnow())
    stmt = select(func.count()).select_from(Subscriber).where(clause)
    return int((await session.execute(stmt)).scalar_one())


async def preview(
    session: AsyncSession, raw: object, *, now: datetime | None = None, sample_size: int = SAMPLE_SIZE
) -> Preview:
    """How many subscribers match right now, and the first few of them (lowest ids)."""
    spec = await validate_filter(session, raw)
    now = now or utcnow()
    clause = compile_filter(spec, dialect_of(session), now=now)
    count = (await session.execute(select(func.count()).select_from(Subscriber).where(clause))).scalar_one()
    sample_stmt = select(Subscriber).where(clause).order_by(Subscriber.id).limit(sample_size)
    sample = list((await session.execute(sample_stmt)).scalars())
    return Preview(count=int(count), sample=sample)


async def find_subscribers(
    session: AsyncSession, raw: object, *, first: int, after: int | None, now: datetime | None = None
) -> Page[Subscriber]:
    """Subscribers matching the filter, oldest first."""
    spec = await validate_filter(session, raw)
    clause = compile_filter(spec, dialect_of(session), now=now or utcnow())
    return await keyset_page(
        session, select(Subscriber).where(clause), Subscriber.id, first=first, after=after
    )


# --- saved segments ---------------------------------------------------------------------------------------


@dataclass
class SegmentInput:
    """On update, None means "leave as it is"; ``filter`` is the JSON form."""

    name: str | None = None
    description: str | None = None
    filter: dict[str, Any] | None = None


def _validate_fields(data: SegmentInput, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
    check_length(errors, "name", data.name, 255)
    check_length(errors, "description", data.description, 10_000)
    if creating and data.filter is None:
        errors.append(FieldError("filter", "Filter is required", ErrorCode.REQUIRED))
    return errors


async def _checked(session: AsyncSession, data: SegmentInput, *, creating: bool) -> dict[str, Any] | None:
    """Every problem with the input at once; returns the filter in canonical form when one was given."""
    errors = _validate_fields(data, creating=creating)
    canonical = None
    if data.filter is not None:
        try:
            canonical = filter_to_dict(await validate_filter(session, data.filter))
        except DomainError as exc:
            errors += exc.errors
    raise_if(errors)
    return canonical


async def create_segment(session: AsyncSession, data: SegmentInput) -> Segment:
    canonical = await _checked(session, data, creating=True)
    assert data.name is not None and canonical is not None
    row = Segment(name=data.name.strip(), description=data.description or "", filter=canonical)
    session.add(row)
    await session.flush()
    return row


async def get_segment(session: AsyncSession, segment_id: int, *, for_update: bool = False) -> Segment:
    row = await session.get(Segment, segment_id, with_for_update=for_update)
    if row is None:
        raise NotFound("Segment", code=ErrorCode.SEGMENT_NOT_FOUND)
    return row


async def update_segment(session: AsyncSession, segment_id: int, data: SegmentInput) -> Segment:
    canonical = await _checked(session, data, creating=False)
    row = await get_segment(session, segment_id)
    if data.name is not None:
        row.name = data.name.strip()
    if data.description is not None:
        row.description = data.description
    if canonical is not None:
        row.filter = canonical
    await session.flush()
    return row


async def delete_segment(session: AsyncSession, segment_id: int) -> Segment:
    # The row lock orders this against a campaign being pointed at the segment at the same time.
    row = await get_segment(session, segment_id, for_update=True)
    users = (
        select(Campaign.name)
        .join(CampaignSegment, CampaignSegment.campaign_id == Campaign.id)
        .where(CampaignSegment.segment_id == segment_id, Campaign.status.not_in(FINAL_CAMPAIGN_STATUSES))
        .order_by(Campaign.id)
    )
    names = list((await session.execute(users)).scalars())
    if names:
        shown = ", ".join(repr(n) for n in names[:3]) + (" ..." if len(names) > 3 else "")
        raise DomainError.single(
            ErrorCode.IN_USE, f"Segment is targeted by {len(names)} unfinished campaign(s): {shown}", "id"
        )
    await session.delete(row)
    await session.flush()
    return row


async def find_segments(session: AsyncSession, *, first: int, after: int | None) -> Page[Segment]:
    return await keyset_page(session, select(Segment), Segment.id, first=first, after=after)


async def segments_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Segment]:
    rows = (await session.execute(select(Segment).where(Segment.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def subscriber_counts(session: AsyncSession, ids: Sequence[int]) -> dict[int, int]:
    """Current matches per segment; one COUNT per segment (each filter is its own query plan)."""
    now = utcnow()
    counts: dict[int, int] = {}
    for sid, raw in (
        await session.execute(select(Segment.id, Segment.filter).where(Segment.id.in_(ids)))
    ).all():
        counts[sid] = await count_matching(session, parse_filter(raw), now=now)
    return counts


# --- campaigns targeting segments -------------------------------------------------------------------------


async def require_segments(session: AsyncSession, ids: Sequence[int], field: str = "segmentIds") -> None:
    wanted = set(ids)
    if len(wanted) > MAX_SEGMENTS_PER_CAMPAIGN:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, f"At most {MAX_SEGMENTS_PER_CAMPAIGN} segments", field
        )
    if not wanted:
        return
    found = set((await session.execute(select(Segment.id).where(Segment.id.in_(wanted)))).scalars())
    missing = len(wanted - found)
    if missing:
        raise DomainError.single(
            ErrorCode.SEGMENT_NOT_FOUND, f"{missing} of the given segments do not exist", field
        )


async def replace_campaign_segments(session: AsyncSession, campaign_id: int, ids: Sequence[int]) -> None:
    wanted = set(ids)
    current = set(
        (
            await session.execute(
                select(CampaignSegment.segment_id).where(CampaignSegment.campaign_id == campaign_id)
            )
        ).scalars()
    )
    if current - wanted:
        await session.execute(
            delete(CampaignSegment).where(
                CampaignSegment.campaign_id == campaign_id, CampaignSegment.segment_id.in_(current - wanted)
            )
        )
    new = sorted(wanted - current)
    if new:
        await session.execute(
            insert(CampaignSegment), [{"campaign_id": campaign_id, "segment_id": i} for i in new]
        )


async def segment_ids_by_campaign(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(CampaignSegment.campaign_id, CampaignSegment.segment_id)
        .where(CampaignSegment.campaign_id.in_(campaign_ids))
        .order_by(CampaignSegment.campaign_id, CampaignSegment.segment_id)
    )
    out: dict[int, list[int]] = {cid: [] for cid in campaign_ids}
    for cid, sid in (await session.execute(stmt)).all():
        out[cid].append(sid)
    return out


async def record_definitions(session: AsyncSession, campaign_id: int) -> None:
    """Copy each target segment's current filter onto the campaign (at start; later edits no longer apply)."""
    current = select(Segment.filter).where(Segment.id == CampaignSegment.segment_id).scalar_subquery()
    await session.execute(
        update(CampaignSegment)
        .where(CampaignSegment.campaign_id == campaign_id)
        .values(definition=current)
        .execution_options(synchronize_session=False)
    )


async def campaign_definitions(session: AsyncSession, campaign_id: int) -> list[dict[str, Any]]:
    """The filters a campaign's audience uses: recorded at start, else (not started yet) the live ones."""
    stmt = (
        select(func.coalesce(CampaignSegment.definition, Segment.filter))
        .join(Segment, Segment.id == CampaignSegment.segment_id)
        .where(CampaignSegment.campaign_id == campaign_id)
        .order_by(CampaignSegment.segment_id)
    )
    return [dict(d) for d in (await session.execute(stmt)).scalars()]
