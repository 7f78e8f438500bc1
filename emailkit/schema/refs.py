"""Resolving a related campaign or subscriber by primary key through the request's DataLoaders.

The types are imported inside the functions: campaigns and subscribers import the modules that call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailkit.schema.context import Info

if TYPE_CHECKING:
    from emailkit.schema.campaigns import CampaignType
    from emailkit.schema.subscribers import SubscriberType


async def campaign_by_pk(info: Info, pk: int | None) -> CampaignType | None:
    from emailkit.schema.campaigns import CampaignType

    if pk is None:
        return None
    row = await info.context.loaders.campaign_by_id.load(pk)
    return CampaignType.from_model(row) if row is not None else None


async def subscriber_by_pk(info: Info, pk: int | None) -> SubscriberType | None:
    from emailkit.schema.subscribers import SubscriberType

    if pk is None:
        return None
    row = await info.context.loaders.subscriber_by_id.load(pk)
    return SubscriberType.from_model(row) if row is not None else None
