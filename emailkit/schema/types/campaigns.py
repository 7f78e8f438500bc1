"""The Campaign type, with its progress (CampaignProgress) and its deliveries."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.db.tables.sending import DeliveryStatus
from emailkit.domain.sending.archive import archive_subscriber
from emailkit.domain.sending.progress import Estimate, ProgressSnapshot
from emailkit.schema.context import Info
from emailkit.schema.enums import CampaignStatus, ContentFormat
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Connection, Node, to_global_id
from emailkit.schema.types.abtests import AbTest, VariantType, campaign_ab_test, campaign_variants
from emailkit.schema.types.analytics import (
    CampaignLinkStats,
    CampaignStats,
    TimelinePoint,
    campaign_links,
    campaign_stats,
    campaign_timeline,
)
from emailkit.schema.types.deliveries import DeliveryType
from emailkit.schema.types.lists import MailingListType
from emailkit.schema.types.segments import SegmentType
from emailkit.schema.types.templates import TemplateType


@strawberry.type
class CampaignProgress:
    status: CampaignStatus
    status_reason: str | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    in_doubt: int = strawberry.field(
        description="Recipients whose worker died while handing them over: they may or may not have received "
        "the message. Not counted as sent, never sent again unless retried with includeInDoubt."
    )
    rate_per_second: float = strawberry.field(description="Recipients processed per second, recently.")
    eta_seconds: float | None = strawberry.field(
        description="Estimated seconds to completion; null if unknown."
    )

    @classmethod
    def of(cls, snapshot: ProgressSnapshot, estimate: Estimate | None = None) -> CampaignProgress:
        return cls(
            status=snapshot.status,
            status_reason=snapshot.status_reason,
            recipients=snapshot.recipients,
            sent=snapshot.sent,
            failed=snapshot.failed,
            skipped=snapshot.skipped,
            in_doubt=snapshot.in_doubt,
            rate_per_second=estimate.rate_per_second if estimate else 0.0,
            eta_seconds=estimate.eta_seconds if estimate else None,
        )


async def campaign_deliveries(
    root: CampaignType,
    info: Info,
    first: int = 50,
    after: str | None = None,
    status: DeliveryStatus | None = None,
) -> Connection[DeliveryType]:
    """The ledger of this campaign: one row per recipient, with the provider's error for failures."""
    loaders = info.context.loaders
    return await info.context.child_connection(
        loaders.campaign_delivery_page,
        loaders.campaign_delivery_count,
        root.pk,
        DeliveryType.from_model,
        first,
        after,
        status,
    )


async def campaign_progress(root: CampaignType, info: Info) -> CampaignProgress:
    row = await info.context.loaders.campaign_by_id.load(root.pk)
    if row is None:
        raise GraphQLError("Campaign not found", extensions={"code": "NOT_FOUND"})
    return CampaignProgress.of(ProgressSnapshot.of(row))


@strawberry.type(name="Campaign")
class CampaignType(Node):
    pk: strawberry.Private[int]
    template_pk: strawberry.Private[int | None]
    name: str
    subject: str
    status: CampaignStatus
    status_reason: str | None = strawberry.field(description="Why the campaign paused or failed, if it did.")
    from_email: str
    from_name: str
    reply_to: str | None
    body: str | None = strawberry.field(
        description="The inline body; null when the campaign uses a template."
    )
    format: ContentFormat | None
    plain_text: str | None
    track_opens: bool
    track_clicks: bool
    web_view_link: bool = strawberry.field(
        description='A "View in browser" line at the top of each message, linking to its web view.'
    )
    sender_id: strawberry.ID | None = strawberry.field(
        description="The sender it goes through; null: its first list's sender (lowest list id), else the "
        "default sender."
    )
    archive: bool = strawberry.field(
        description="Listed in the workspace's public archive (/archive/<slug>) once sent."
    )
    archive_data: JSON = strawberry.field(
        description="The placeholder subscriber the archived copy is rendered for (the defaults filled in)."
    )
    send_at: datetime | None = strawberry.field(
        description="When it starts (scheduleCampaign); with localTime, when the first timezone of its "
        "audience is due."
    )
    local_time: bool = strawberry.field(
        description="Sent to each recipient at localSendAt on their own clock (scheduleCampaign with localTime)."
    )
    local_send_at: str | None = strawberry.field(
        description="With localTime: the wall-clock time each recipient gets it at in their own timezone, as "
        "YYYY-MM-DDTHH:MM:SS (no offset); null otherwise."
    )
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The lists this campaign is sent to.")
    async def lists(self, info: Info) -> list[MailingListType]:
        loaders = info.context.loaders
        rows = await loaders.list_by_id.load_many(await loaders.campaign_list_ids.load(self.pk))
        return [MailingListType.from_model(r) for r in rows if r is not None]

    @strawberry.field(description="The segments whose matches this campaign is sent to, besides its lists.")
    async def segments(self, info: Info) -> list[SegmentType]:
        loaders = info.context.loaders
        rows = await loaders.segment_by_id.load_many(await loaders.segment_ids_by_campaign.load(self.pk))
        return [SegmentType.from_model(r) for r in rows if r is not None]

    @strawberry.field(description="The variants of its A/B test, A first; empty for a campaign without one.")
    async def variants(self, info: Info) -> list[VariantType]:
        return await campaign_variants(info, self.pk, self.subject, self.from_name)

    @strawberry.field(description="Its A/B test: how it is set up and where it stands; null without one.")
    async def ab_test(self, info: Info) -> AbTest | None:
        return await campaign_ab_test(
            info, self.pk, self.subject, self.from_name, started=self.started_at is not None
        )

    deliveries: Connection[DeliveryType] = strawberry.field(resolver=campaign_deliveries)
    progress: CampaignProgress = strawberry.field(resolver=campaign_progress)

    @strawberry.field(graphql_type=CampaignStats)
    def stats(self, info: Info) -> CampaignStats | Awaitable[CampaignStats]:
        return campaign_stats(self, info)

    links: list[CampaignLinkStats] = strawberry.field(resolver=campaign_links)

    timeline: list[TimelinePoint] = strawberry.field(resolver=campaign_timeline)

    @strawberry.field(description="The template providing the body; null when the body is inline.")
    async def template(self, info: Info) -> TemplateType | None:
        return await load_one(info.context.loaders.template_by_id, self.template_pk, TemplateType.from_model)

    @classmethod
    def from_model(cls, row: CampaignRow) -> CampaignType:
        return cls(
            id=to_global_id("Campaign", row.id),
            pk=row.id,
            template_pk=row.template_id,
            name=row.name,
            subject=row.subject,
            status=row.status,
            status_reason=row.status_reason,
            from_email=row.from_email,
            from_name=row.from_name,
            reply_to=row.reply_to,
            body=row.body,
            format=row.format,
            plain_text=row.plain_text,
            track_opens=row.track_opens,
            track_clicks=row.track_clicks,
            web_view_link=row.web_view_link,
            sender_id=to_global_id("Sender", row.sender_id) if row.sender_id is not None else None,
            archive=row.archive,
            archive_data=JSON(_public_archive_data(row.archive_data)),
            send_at=row.send_at,
            local_time=row.local_send_at is not None,
            local_send_at=row.local_send_at.isoformat(timespec="seconds") if row.local_send_at else None,
            started_at=row.started_at,
            finished_at=row.finished_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _public_archive_data(data: dict[str, Any] | None) -> dict[str, Any]:
    shown = archive_subscriber(data)
    return {key: shown[key] for key in ("name", "email", "attributes")}
