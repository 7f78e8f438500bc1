"""Mutations on the campaign definition: createCampaign, updateCampaign, deleteCampaign.

Starting, pausing and the rest of a campaign's life are in :mod:`emailkit.schema.mutations.sending`.
"""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from emailkit.db.tables.sending import AbMetric
from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.domain.sending import campaigns
from emailkit.domain.sending.ab import definition as ab
from emailkit.domain.sending_domains.policy import require_verified_from
from emailkit.schema.context import Info
from emailkit.schema.enums import ContentFormat
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id, decode_ids
from emailkit.schema.types.campaigns import CampaignType
from emailkit.schema.types.senders import sender_pk

WEB_VIEW_LINK = (
    'Default false. Put a small "View in browser" line at the top of each message, linking to the web view '
    "(also available to templates as {{ webview_url }})."
)
ARCHIVE = (
    "Default false. List the campaign in its workspace's public archive (/archive/<slug>) once sent, rendered "
    "with archiveData and without tracking."
)
ARCHIVE_DATA = (
    "The placeholder subscriber the archived copy is rendered for: {name, email, attributes}; by default "
    'name "Subscriber", email subscriber@example.com, no attributes. Never a real subscriber\'s data.'
)


@strawberry.input(
    description="One variant of an A/B test: what it changes. An omitted field keeps the campaign's; give either "
    "templateId or body with its format for content of its own (its text part is then derived from its HTML)."
)
class CampaignVariantInput:
    subject: str | None = strawberry.field(default=None, description="A Jinja template, like the campaign's.")
    from_name: str | None = None
    body: str | None = None
    format: ContentFormat | None = None
    template_id: strawberry.ID | None = None


@strawberry.input(description="How an A/B test of 2 to 5 variants runs.")
class AbTestInput:
    test_share: float = strawberry.field(
        description="The fraction of the audience that tests the variants (split evenly among them): more than "
        "0, at most 1. The rest gets the winner."
    )
    metric: AbMetric = strawberry.field(
        description="What decides: unique opens or unique clicks per recipient."
    )
    wait_seconds: int = strawberry.field(
        description=f"How long after the test is sent the winner is chosen automatically "
        f"({ab.MIN_WAIT_SECONDS} to {ab.MAX_WAIT_SECONDS})."
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
    web_view_link: bool | None = strawberry.field(default=None, description=WEB_VIEW_LINK)
    archive: bool | None = strawberry.field(default=None, description=ARCHIVE)
    archive_data: JSON | None = strawberry.field(default=None, description=ARCHIVE_DATA)
    variants: list[CampaignVariantInput] | None = strawberry.field(
        default=None, description="An A/B test's 2 to 5 variants (with abTest)."
    )
    ab_test: AbTestInput | None = None
    sender_id: strawberry.ID | None = strawberry.field(
        default=None,
        description='The sender it goes through (a Sender id; "" or defaultSender\'s id: none of its own).',
    )


@strawberry.input(
    description=(
        "Omitted fields keep their value; an empty replyTo or plainText clears it; listIds and segmentIds "
        "replace their sets (segmentIds only until the campaign starts); variants replace the A/B test's "
        "variants (an empty list removes the test) and abTest its settings, until the campaign starts. "
        "Only DRAFT, SCHEDULED and PAUSED campaigns can be edited; archive and archiveData alone can change in "
        "any status."
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
    web_view_link: bool | None = strawberry.field(default=None, description=WEB_VIEW_LINK)
    archive: bool | None = strawberry.field(default=None, description=ARCHIVE)
    archive_data: JSON | None = strawberry.field(
        default=None, description=ARCHIVE_DATA + " An empty object resets it to the defaults."
    )
    variants: list[CampaignVariantInput] | None = None
    ab_test: AbTestInput | None = None
    sender_id: strawberry.ID | None = strawberry.field(
        default=None,
        description='The sender it goes through (a Sender id; "" or defaultSender\'s id: none of its own).',
    )


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
        web_view_link=input.web_view_link,
        archive=input.archive,
        archive_data=input.archive_data,
        variants=[_variant(i, v) for i, v in enumerate(input.variants)]
        if input.variants is not None
        else None,
        ab_test=(
            ab.AbTestInput(input.ab_test.test_share, input.ab_test.metric, input.ab_test.wait_seconds)
            if input.ab_test is not None
            else None
        ),
        sender_id=sender_pk(input.sender_id),
    )


def _variant(i: int, v: CampaignVariantInput) -> ab.VariantInput:
    return ab.VariantInput(
        subject=v.subject,
        from_name=v.from_name,
        body=v.body,
        format=v.format,
        template_id=(
            decode_id(v.template_id, "Template", f"variants[{i}].templateId")
            if v.template_id is not None
            else None
        ),
    )


@strawberry.type
class Mutation:
    @write_mutation
    async def create_campaign(self, info: Info, input: CreateCampaignInput) -> CampaignPayload:
        domains = info.context.runtime.domains

        async def create(s: AsyncSession) -> CampaignRow:
            row = await campaigns.create_campaign(s, _to_domain(input))
            # After the campaign's own checks (a malformed address is INVALID_EMAIL); refused, nothing is kept.
            await require_verified_from(s, row.from_email, domains)
            return row

        out = await mutate(info, create)
        return _payload(out.value, out.errors)

    @write_mutation
    async def update_campaign(self, info: Info, input: UpdateCampaignInput) -> CampaignPayload:
        domains = info.context.runtime.domains

        async def update(s: AsyncSession) -> CampaignRow:
            row = await campaigns.update_campaign(s, decode_id(input.id, "Campaign"), _to_domain(input))
            if input.from_email is not None:
                await require_verified_from(s, row.from_email, domains)
            return row

        out = await mutate(info, update)
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_campaign(self, info: Info, input: DeleteCampaignInput) -> DeletePayload:
        out = await mutate(info, lambda s: campaigns.delete_campaign(s, decode_id(input.id, "Campaign")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
