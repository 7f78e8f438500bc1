"""What a variant sends: its own subject, sender name and content where it has them, the campaign's where not."""

from __future__ import annotations

from dataclasses import dataclass

from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign, CampaignVariant

LABELS = "ABCDE"


def label(position: int) -> str:
    return LABELS[position] if 0 <= position < len(LABELS) else str(position + 1)


@dataclass(frozen=True)
class VariantContent:
    subject: str
    from_name: str
    # A template, else an inline body with its format.
    template_id: int | None
    body: str | None
    format: ContentFormat | None
    # The campaign's hand-written text alternative belongs to the campaign's content: a variant with content
    # of its own gets a text part derived from its own HTML instead.
    plain_text: str | None
    own_content: bool

    @property
    def key(self) -> tuple[object, ...]:
        """Equal for two variants that would send the same message."""
        return (self.subject, self.from_name, self.template_id, self.body, self.format)


def content_of(campaign: Campaign, variant: CampaignVariant) -> VariantContent:
    own = variant.template_id is not None or variant.body is not None
    if variant.template_id is not None:
        template_id, body, fmt = variant.template_id, None, None
    elif variant.body is not None:
        template_id, body, fmt = None, variant.body, variant.format
    else:
        template_id, body, fmt = campaign.template_id, campaign.body, campaign.format
    return VariantContent(
        subject=variant.subject if variant.subject is not None else campaign.subject,
        from_name=variant.from_name if variant.from_name is not None else campaign.from_name,
        template_id=template_id,
        body=body,
        format=fmt,
        plain_text=None if own else campaign.plain_text,
        own_content=own,
    )
