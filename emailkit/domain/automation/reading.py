"""What the API reads of flows for many parents at once (its DataLoaders batch through these): versions and
runs by id, and the pages of runs of many flows or many subscribers, with their counts.

Each function answers for every id it is given, in one statement. Runs are listed newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.automation import FlowRun, FlowRunStatus, FlowVersion
from emailkit.domain.child_pages import ChildPage, child_pages
from emailkit.domain.counting import DEFAULT_EXACT_LIMIT, Count, count_children


async def versions_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, FlowVersion]:
    rows = (await session.execute(select(FlowVersion).where(FlowVersion.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def runs_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, FlowRun]:
    rows = (await session.execute(select(FlowRun).where(FlowRun.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


def _runs(status: FlowRunStatus | None) -> Select[Any]:
    stmt = select(FlowRun)
    return stmt.where(FlowRun.status == status) if status is not None else stmt


async def run_pages(
    session: AsyncSession,
    flow_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    status: FlowRunStatus | None = None,
) -> dict[int, ChildPage[FlowRun]]:
    """Each flow's runs, newest first, optionally only those in one status."""
    return await child_pages(
        session,
        _runs(status),
        FlowRun.flow_id,
        FlowRun.id,
        flow_ids,
        first=first,
        after=after,
        descending=True,
    )


async def run_counts(
    session: AsyncSession,
    flow_ids: Sequence[int],
    status: FlowRunStatus | None = None,
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
) -> dict[int, Count]:
    return await count_children(session, _runs(status), FlowRun.flow_id, flow_ids, exact_limit)


async def subscriber_run_pages(
    session: AsyncSession, subscriber_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, ChildPage[FlowRun]]:
    """Each subscriber's runs through any flow, newest first."""
    return await child_pages(
        session,
        select(FlowRun),
        FlowRun.subscriber_id,
        FlowRun.id,
        subscriber_ids,
        first=first,
        after=after,
        descending=True,
    )


async def subscriber_run_counts(
    session: AsyncSession, subscriber_ids: Sequence[int], *, exact_limit: int = DEFAULT_EXACT_LIMIT
) -> dict[int, Count]:
    return await count_children(session, select(FlowRun), FlowRun.subscriber_id, subscriber_ids, exact_limit)
