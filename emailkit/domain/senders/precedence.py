"""Which sender a campaign goes through, as one SQL expression over its row (read with the campaign, so the
default path costs no statement of its own).

The campaign's own sender; else the sender of its list with the lowest id among those that have one; else
NULL, the instance's default sender. A flow's SEND step and a transactional message name theirs directly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from emailkit.db.tables.audience import MailingList
from emailkit.db.tables.sending import Campaign, CampaignList


def campaign_sender_id() -> Any:
    """The id of the sender the campaign in the enclosing query sends through (NULL: the default)."""
    from_lists = (
        select(MailingList.sender_id)
        .join(CampaignList, CampaignList.list_id == MailingList.id)
        .where(CampaignList.campaign_id == Campaign.id, MailingList.sender_id.is_not(None))
        .order_by(CampaignList.list_id)
        .limit(1)
        .correlate(Campaign)
        .scalar_subquery()
    )
    return func.coalesce(Campaign.sender_id, from_lists)
