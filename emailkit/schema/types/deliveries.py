"""The Delivery type: one recipient of one campaign or transactional message, in the sending ledger."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from emailkit.db.tables.sending import Delivery as DeliveryRow
from emailkit.db.tables.sending import DeliveryStatus
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Node, to_global_id
from emailkit.schema.types.abtests import VariantType, variant_by_id
from emailkit.schema.types.lazy import resolved
from emailkit.schema.types.subscribers import SubscriberType

if TYPE_CHECKING:
    from emailkit.schema.types.campaigns import CampaignType

strawberry.enum(DeliveryStatus, name="DeliveryStatus")

# Lazy: the campaigns module imports this one (Campaign.deliveries).
CampaignRef = Annotated["CampaignType", strawberry.lazy("emailkit.schema.types.campaigns")]


@strawberry.type(name="Delivery", description="One recipient of one campaign or transactional message.")
class DeliveryType(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    subscriber_pk: strawberry.Private[int | None]
    variant_pk: strawberry.Private[int | None]
    email: str
    status: DeliveryStatus
    skip_reason: str | None = strawberry.field(
        description="Why a SKIPPED recipient got nothing: blocklisted, unsubscribed, unconfirmed, suppressed, "
        "frequency_cap (EMAILKIT_MARKETING_CAP)."
    )
    provider: str | None
    provider_message_id: str | None
    attempts: int
    last_error: str | None = strawberry.field(description="The provider's error for the last failed attempt.")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    not_before: datetime | None = strawberry.field(
        description="A campaign sent in local time: not handed over before this instant (the campaign's "
        "wall-clock time in the recipient's timezone)."
    )

    @strawberry.field
    async def campaign(self, info: Info) -> CampaignRef | None:
        return await load_one(
            info.context.loaders.campaign_by_id, self.campaign_pk, resolved(CampaignRef).from_model
        )

    @strawberry.field(
        description="The A/B test variant this recipient got (recorded with the delivery); null without a test."
    )
    async def variant(self, info: Info) -> VariantType | None:
        return await variant_by_id(info, self.variant_pk) if self.variant_pk is not None else None

    @strawberry.field(description="The recipient; null for a transactional message or once erased.")
    async def subscriber(self, info: Info) -> SubscriberType | None:
        return await load_one(
            info.context.loaders.subscriber_by_id, self.subscriber_pk, SubscriberType.from_model
        )

    @classmethod
    def from_model(cls, row: DeliveryRow) -> DeliveryType:
        return cls(
            id=to_global_id("Delivery", row.id),
            pk=row.id,
            campaign_pk=row.campaign_id,
            subscriber_pk=row.subscriber_id,
            variant_pk=row.variant_id,
            email=row.email,
            status=row.status,
            skip_reason=row.skip_reason,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            not_before=row.not_before,
        )
