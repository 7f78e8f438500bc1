"""Queries: `campaigns` and `campaign(id)`."""

from __future__ import annotations

import strawberry

from emailkit.domain.sending import campaigns
from emailkit.schema.context import Info
from emailkit.schema.enums import CampaignStatus
from emailkit.schema.loaders import load_one
from emailkit.schema.lookahead import selects
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.analytics import fill_stats
from emailkit.schema.types.campaigns import CampaignType


@strawberry.type
class Query:
    @strawberry.field(description="Campaigns, newest first, optionally only those in one status.")
    async def campaigns(
        self, info: Info, first: int = 50, after: str | None = None, status: CampaignStatus | None = None
    ) -> Connection[CampaignType]:
        page = await info.context.connection(
            lambda s, n, a: campaigns.find_campaigns(s, first=n, after=a, status=status),
            CampaignType.from_model,
            first,
            after,
        )
        if selects(info, "edges", "node", "stats"):
            await fill_stats(info, [edge.node.pk for edge in page.edges])
        return page

    @strawberry.field
    async def campaign(self, info: Info, id: strawberry.ID) -> CampaignType | None:
        return await load_one(
            info.context.loaders.campaign_by_id, decode_id_or_none(id, "Campaign"), CampaignType.from_model
        )
