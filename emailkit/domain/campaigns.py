"""Campaigns: definition and target lists (sending lives in the sending modules)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.models import Campaign, CampaignList


async def campaigns_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Campaign]:
    rows = (await session.execute(select(Campaign).where(Campaign.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def list_ids_by_campaign(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(CampaignList.campaign_id, CampaignList.list_id)
        .where(CampaignList.campaign_id.in_(campaign_ids))
        .order_by(CampaignList.campaign_id, CampaignList.list_id)
    )
    out: dict[int, list[int]] = defaultdict(list)
    for cid, lid in (await session.execute(stmt)).all():
        out[cid].append(lid)
    return out
