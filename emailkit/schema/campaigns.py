"""Campaigns: type, queries and mutations for the campaign definition."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime

import strawberry

from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.domain.sending import campaigns
from emailkit.schema.analytics import (
    CampaignLinkStats,
    CampaignStats,
    TimelinePoint,
    campaign_links,
    campaign_stats,
    campaign_timeline,
    fill_stats,
)
from emailkit.schema.context import Info
from emailkit.schema.enums import CampaignStatus, ContentFormat
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.lists import MailingListType
from emailkit.schema.lookahead import selects
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import Connection, Node, decode_id, decode_id_or_none, decode_ids, to_global_id
from emailkit.schema.segments import SegmentType
from emailkit.schema.sending import (
    CampaignProgress,
    DeliveryType,
    campaign_deliveries,
    campaign_progress_field,
)
from emailkit.schema.templates import TemplateType


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
    send_at: datetime | None
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

    deliveries: Connection[DeliveryType] = strawberry.field(resolver=campaign_deliveries)
    progress: CampaignProgress = strawberry.field(resolver=campaign_progress_field)

    @strawberry.field(graphql_type=CampaignStats)
    def stats(self, info: Info) -> CampaignStats | Awaitable[CampaignStats]:
        return campaign_stats(self, info)

    links: list[CampaignLinkStats] = strawberry.field(resolver=campaign_links)

    timeline: list[TimelinePoint] = strawberry.field(resolver=campaign_timeline)

    @strawberry.field(description="The template providing the body; null when the body is inline.")
    async def template(self, info: Info) -> TemplateType | None:
        if self.template_pk is None:
            return None
        row = await info.context.loaders.template_by_id.load(self.template_pk)
        return TemplateType.from_model(row) if row is not None else None

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
            send_at=row.send_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.input(description="Give either templateId or body with its format.")
class CreateCampaignInput:
    name: str
    subject: str = strawberry.field(description="A Jinja template, rendered per recipient.")
    from_email: str
    from_name: str | None = None
    reply_to: str | None = None
    list_ids: list[strawberry.ID] | None = None
    segment_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Resolved when the campaign starts; a campaign needs a list or a segment."
    )
    template_id: strawberry.ID | None = None
    body: str | None = None
    format: ContentFormat | None = None
    plain_text: str | None = None
    track_opens: bool | None = strawberry.field(default=None, description="Default true.")
    track_clicks: bool | None = strawberry.field(default=None, description="Default true.")


@strawberry.input(
    description=(
        "Omitted fields keep their value; an empty replyTo or plainText clears it; listIds and segmentIds "
        "replace their sets (segmentIds only until the campaign starts). "
        "Only DRAFT, SCHEDULED and PAUSED campaigns can be edited."
    )
)
class UpdateCampaignInput:
    id: strawberry.ID
    name: str | None = None
    subject: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    list_ids: list[strawberry.ID] | None = None
    segment_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Resolved when the campaign starts; a campaign needs a list or a segment."
    )
    template_id: strawberry.ID | None = None
    body: str | None = None
    format: ContentFormat | None = None
    plain_text: str | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None


@strawberry.input
class DeleteCampaignInput:
    id: strawberry.ID


@strawberry.type
class CampaignPayload:
    campaign: CampaignType | None
    user_errors: list[UserError]


def _payload(row: CampaignRow | None, errors: list[UserError]) -> CampaignPayload:
    return CampaignPayload(
        campaign=CampaignType.from_model(row) if row is not None else None, user_errors=errors
    )


def _to_domain(input: CreateCampaignInput | UpdateCampaignInput) -> campaigns.CampaignInput:
    """Decode the global IDs; a malformed one raises a DomainError, so call it inside `mutate`."""
    return campaigns.CampaignInput(
        name=input.name,
        subject=input.subject,
        from_email=input.from_email,
        from_name=input.from_name,
        reply_to=input.reply_to,
        list_ids=decode_ids(input.list_ids, "MailingList", "listIds") if input.list_ids is not None else None,
        segment_ids=(
            decode_ids(input.segment_ids, "Segment", "segmentIds") if input.segment_ids is not None else None
        ),
        template_id=(
            decode_id(input.template_id, "Template", "templateId") if input.template_id is not None else None
        ),
        body=input.body,
        format=input.format,
        plain_text=input.plain_text,
        track_opens=input.track_opens,
        track_clicks=input.track_clicks,
    )


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
        pk = decode_id_or_none(id, "Campaign")
        row = await info.context.loaders.campaign_by_id.load(pk) if pk is not None else None
        return CampaignType.from_model(row) if row is not None else None


@strawberry.type
class Mutation:
    @write_mutation
    async def create_campaign(self, info: Info, input: CreateCampaignInput) -> CampaignPayload:
        out = await mutate(info, lambda s: campaigns.create_campaign(s, _to_domain(input)))
        return _payload(out.value, out.errors)

    @write_mutation
    async def update_campaign(self, info: Info, input: UpdateCampaignInput) -> CampaignPayload:
        out = await mutate(
            info,
            lambda s: campaigns.update_campaign(s, decode_id(input.id, "Campaign"), _to_domain(input)),
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_campaign(self, info: Info, input: DeleteCampaignInput) -> DeletePayload:
        out = await mutate(info, lambda s: campaigns.delete_campaign(s, decode_id(input.id, "Campaign")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
