"""The daily email quota of a campaign's workspace, applied chunk by chunk while a batch sends.

A chunk takes what today's quota still allows (``quotas.reserve_emails``); what it does not get stays QUEUED,
the batch is given back to run again after 00:00 UTC, and the campaign, still RUNNING, says why in its
statusReason until sending continues. Built only for a workspace with a quota: the others pay nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign
from emailkit.db.types import utcnow
from emailkit.domain import quotas
from emailkit.domain.sending import lifecycle

# What a waiting campaign's statusReason starts with (quotas.Allowance.reason).
NOTE_PREFIX = "The workspace's quota of "


@dataclass
class Admitted:
    """How many of the chunk's recipients may go now; `wait` seconds until the rest may (None: all may)."""

    count: int
    wait: float | None = None


class DailyQuota:
    def __init__(self, db: Database, campaign_id: int, *, noted: bool) -> None:
        self.db = db
        self.campaign_id = campaign_id
        # Whether the campaign says it is waiting for the quota (cleared once sending continues).
        self.noted = noted

    @classmethod
    def for_campaign(cls, db: Database, campaign: Campaign, quota: int | None) -> DailyQuota | None:
        if quota is None:
            return None
        noted = (campaign.status_reason or "").startswith(NOTE_PREFIX)
        return cls(db, campaign.id, noted=noted)

    async def admit(self, wanted: int, now: datetime | None = None) -> Admitted:
        now = now or utcnow()
        async with self.db.transaction() as session:
            allowance = await quotas.reserve_emails(session, wanted, now=now)
            if allowance.next_day is None:
                if self.noted:
                    await lifecycle.note_while_running(session, self.campaign_id, None)
                    self.noted = False
                return Admitted(allowance.granted)
            if not self.noted:
                await lifecycle.note_while_running(session, self.campaign_id, allowance.reason)
                self.noted = True
        return Admitted(allowance.granted, wait=(allowance.next_day - now).total_seconds())
