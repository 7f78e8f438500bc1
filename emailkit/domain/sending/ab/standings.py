"""How the variants of an A/B test stand: each one's counters (sent, from the ledger; the feedback counters,
from ``campaign_variant_stats``), its rate by the test's metric, the leader, and its margin over the runner-up.

The rate of a variant is its unique opens (or clicks) per recipient: per delivered recipient when the provider
reports deliveries (for any variant of the campaign, so that all are measured alike), else per sent one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import one_of
from emailkit.db.tables.feedback import COUNTERS, CampaignVariantStats
from emailkit.db.tables.sending import AbMetric, Campaign, CampaignAbTest, CampaignVariant
from emailkit.domain.sending.ab.significance import Arm, Comparison, compare


@dataclass(frozen=True)
class VariantCounts:
    variant: CampaignVariant
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    opens: int = 0
    unique_opens: int = 0
    clicks: int = 0
    unique_clicks: int = 0
    unsubscribed: int = 0

    def hits(self, metric: AbMetric) -> int:
        return self.unique_opens if metric is AbMetric.OPENS else self.unique_clicks


@dataclass(frozen=True)
class Standings:
    test: CampaignAbTest
    # By position: A, B, ...
    variants: list[VariantCounts] = field(default_factory=list)
    # Of the campaign: whether it has started, and the subject and sender name its variants may keep.
    started: bool = False
    subject: str = ""
    from_name: str = ""

    @property
    def per_delivered(self) -> bool:
        return any(v.delivered > 0 for v in self.variants)

    def base(self, v: VariantCounts) -> int:
        return v.delivered if self.per_delivered else v.sent

    def arm(self, v: VariantCounts, metric: AbMetric | None = None) -> Arm:
        return Arm(v.hits(metric or self.test.metric), self.base(v))

    def leader(self) -> VariantCounts | None:
        """The best rate by the test's metric; a tie goes to the earlier variant."""
        best: VariantCounts | None = None
        for v in self.variants:
            if best is None or self.arm(v).rate > self.arm(best).rate:
                best = v
        return best

    def winner(self) -> VariantCounts | None:
        return self.find(self.test.winner_variant_id)

    def find(self, variant_id: int | None) -> VariantCounts | None:
        return next((v for v in self.variants if v.variant.id == variant_id), None)

    def runner_up(self, first: VariantCounts) -> VariantCounts | None:
        best: VariantCounts | None = None
        for v in self.variants:
            if v is not first and (best is None or self.arm(v).rate > self.arm(best).rate):
                best = v
        return best

    def comparison(self, first: VariantCounts) -> Comparison | None:
        """`first` against the best of the others, as the counters stand now."""
        second = self.runner_up(first)
        return compare(self.arm(first), self.arm(second)) if second is not None else None

    def verdict(self) -> Comparison | None:
        """The winner against the runner-up as it was when the winner was chosen (the winner's counters then
        grow with the rest of the audience, so comparing them later would mislead); until then, the leader
        against the runner-up as they stand."""
        if self.test.decided_at is not None:
            return Comparison(lift=self.test.lift, z=self.test.z_score, p_value=self.test.p_value)
        leader = self.leader()
        return self.comparison(leader) if leader is not None else None


async def standings_by_campaign(session: AsyncSession, campaign_ids: Collection[int]) -> dict[int, Standings]:
    """The standings of those of the campaigns that have an A/B test (two statements)."""
    if not campaign_ids:
        return {}
    tests = await session.execute(
        select(CampaignAbTest, Campaign.started_at, Campaign.subject, Campaign.from_name)
        .join(Campaign, Campaign.id == CampaignAbTest.campaign_id)
        .where(one_of(session, CampaignAbTest.campaign_id, campaign_ids, BigInteger()))
    )
    found = {
        t.campaign_id: (t, started is not None, subject, from_name)
        for t, started, subject, from_name in tests
    }
    if not found:
        return {}
    stmt = (
        select(CampaignVariant, CampaignVariantStats)
        .outerjoin(
            CampaignVariantStats,
            and_(
                CampaignVariantStats.campaign_id == CampaignVariant.campaign_id,
                CampaignVariantStats.variant_id == CampaignVariant.id,
            ),
        )
        .where(one_of(session, CampaignVariant.campaign_id, list(found), BigInteger()))
        .order_by(CampaignVariant.campaign_id, CampaignVariant.position)
    )
    counts: dict[int, list[VariantCounts]] = defaultdict(list)
    for variant, stats in await session.execute(stmt):
        values = {name: int(getattr(stats, name)) for name in COUNTERS} if stats is not None else {}
        counts[variant.campaign_id].append(VariantCounts(variant, sent=int(variant.sent_count), **values))
    return {
        cid: Standings(test, counts.get(cid, []), started=started, subject=subject, from_name=from_name)
        for cid, (test, started, subject, from_name) in found.items()
    }


async def standings_of(session: AsyncSession, campaign_id: int) -> Standings | None:
    return (await standings_by_campaign(session, [campaign_id])).get(campaign_id)
