"""Live campaign stats: the channel, the message, and reading the current value."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import BigInteger, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import one_of
from emailkit.db.engine import Database
from emailkit.db.tables.feedback import CampaignStats
from emailkit.db.tables.sending import Campaign
from emailkit.domain.throttle import CoalescingPublisher

# Marks a message sent because an A/B test's winner was chosen: no counter grew, yet what the stats show did.
DECIDED = "decided"


def stats_channel(campaign_id: int) -> str:
    return f"campaign:{campaign_id}:stats"


@dataclass(frozen=True)
class StatsSnapshot:
    """A campaign's counters. Every field only ever grows, so ``total`` orders snapshots in time."""

    campaign_id: int
    recipients: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    opens: int = 0
    unique_opens: int = 0
    clicks: int = 0
    unique_clicks: int = 0
    unsubscribed: int = 0

    @property
    def total(self) -> int:
        return sum(v for k, v in asdict(self).items() if k != "campaign_id")

    def message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> StatsSnapshot:
        known = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in message.items() if k in known})


async def stats_snapshots(session: AsyncSession, campaign_ids: set[int]) -> dict[int, StatsSnapshot]:
    """Current stats of the campaigns that exist (zeros for those without any event yet)."""
    if not campaign_ids:
        return {}
    stmt = (
        select(Campaign.id, Campaign.recipients_count, Campaign.sent_count, CampaignStats)
        .outerjoin(CampaignStats, CampaignStats.campaign_id == Campaign.id)
        .where(one_of(session, Campaign.id, campaign_ids, BigInteger()))
    )
    out: dict[int, StatsSnapshot] = {}
    for cid, recipients, sent, stats in await session.execute(stmt):
        counters = (
            {
                "delivered": stats.delivered,
                "bounced": stats.bounced,
                "complained": stats.complained,
                "opens": stats.opens,
                "unique_opens": stats.unique_opens,
                "clicks": stats.clicks,
                "unique_clicks": stats.unique_clicks,
                "unsubscribed": stats.unsubscribed,
            }
            if stats is not None
            else {}
        )
        out[cid] = StatsSnapshot(campaign_id=cid, recipients=int(recipients), sent=int(sent), **counters)
    return out


async def publish_decided(
    db: Database, live: CoalescingPublisher | None, campaign_ids: Collection[int]
) -> None:
    """Push the stats of campaigns whose A/B test winner was just chosen (read in the caller's scope)."""
    if live is None or not campaign_ids:
        return
    async with db.session() as session:
        snapshots = await stats_snapshots(session, set(campaign_ids))
    for cid, snapshot in snapshots.items():
        await live.publish_now(stats_channel(cid), {**snapshot.message(), DECIDED: True})
