"""The Suppression type: an address never sent to."""

from __future__ import annotations

from datetime import datetime

import strawberry

from emailkit.db.tables.audience import Suppression as SuppressionRow
from emailkit.db.tables.audience import SuppressionReason
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Node, to_global_id
from emailkit.schema.types.campaigns import CampaignType

strawberry.enum(SuppressionReason, name="SuppressionReason")


@strawberry.type(
    name="Suppression", description="An address that is never sent to, by any campaign or message."
)
class SuppressionType(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    email: str | None = strawberry.field(description="Null once the address was erased; the hash remains.")
    email_hash: str = strawberry.field(description="sha256 (hex) of the lower-cased address.")
    reason: SuppressionReason
    detail: str | None = strawberry.field(description="The provider's diagnostic, or a note.")
    source: str = strawberry.field(description="The provider that reported it, or `api`.")
    created_at: datetime

    @strawberry.field(description="The campaign whose message caused it, if any.")
    async def campaign(self, info: Info) -> CampaignType | None:
        return await load_one(info.context.loaders.campaign_by_id, self.campaign_pk, CampaignType.from_model)

    @classmethod
    def from_model(cls, row: SuppressionRow) -> SuppressionType:
        return cls(
            id=to_global_id("Suppression", row.id),
            pk=row.id,
            campaign_pk=row.campaign_id,
            email=row.email,
            email_hash=row.email_hash,
            reason=row.reason,
            detail=row.detail,
            source=row.source,
            created_at=row.created_at,
        )
