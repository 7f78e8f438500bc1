"""Campaign analytics: the CampaignStats, CampaignLinkStats and TimelinePoint types, and the resolvers of
`Campaign.stats`, `Campaign.links` and `Campaign.timeline`."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Protocol

import strawberry
from strawberry.dataloader import DataLoader

from emailkit.db.tables.feedback import CampaignLink
from emailkit.domain.feedback import analytics
from emailkit.domain.feedback.live import StatsSnapshot
from emailkit.schema.context import Info
from emailkit.schema.loaders import Batched, TimelineArgs, then
from emailkit.schema.relay import to_global_id
from emailkit.schema.types.abtests import AbStatsParts, AbTestStats, VariantStats, ab_loaders

strawberry.enum(analytics.TimelineBucket, name="TimelineBucket", description="UTC hours or UTC days.")

RATES_DOC = (
    "Rates are fractions (0.25 = 25%). openRate, clickRate and complaintRate are relative to `delivered` when "
    "the provider reports deliveries, else to `sent`; bounceRate is relative to `sent`. Opens and clicks "
    "count unique recipients."
)


@strawberry.type(description="A campaign's outcome counters, maintained as events arrive. " + RATES_DOC)
class CampaignStats:
    campaign_id: strawberry.ID
    recipients: int
    sent: int
    delivered: int = strawberry.field(description="Delivery reports (providers send one per message).")
    bounced: int = strawberry.field(description="Recipients with a bounce (hard or soft).")
    complained: int = strawberry.field(description="Recipients who reported the message as spam.")
    opens: int = strawberry.field(description="Every open, repeats included.")
    unique_opens: int
    clicks: int = strawberry.field(description="Every click, repeats included.")
    unique_clicks: int
    unsubscribed: int = strawberry.field(description="Recipients who unsubscribed from this campaign.")
    open_rate: float
    click_rate: float
    bounce_rate: float
    complaint_rate: float
    pk: strawberry.Private[int] = 0
    # The A/B test's part, when it was read with the counters (a subscription); else read on demand.
    ab: strawberry.Private[AbStatsParts | None] = None

    def _ab(self, info: Info) -> AbStatsParts | Awaitable[AbStatsParts]:
        if self.ab is not None:
            return self.ab
        return then(ab_loaders(info).standings.now_or_later(self.pk), AbStatsParts.of)

    @strawberry.field(
        graphql_type=list[VariantStats],
        description="Per variant of the campaign's A/B test, A first; empty for a campaign without a test.",
    )
    def variants(self, info: Info) -> list[VariantStats] | Awaitable[list[VariantStats]]:
        return then(self._ab(info), lambda parts: parts.variants)

    @strawberry.field(graphql_type=VariantStats | None, description="The A/B test's winner, once chosen.")
    def winner(self, info: Info) -> VariantStats | Awaitable[VariantStats | None] | None:
        return then(self._ab(info), lambda parts: parts.winner)

    @strawberry.field(
        graphql_type=AbTestStats | None, description="How the A/B test went; null without a test."
    )
    def ab_test(self, info: Info) -> AbTestStats | Awaitable[AbTestStats | None] | None:
        return then(self._ab(info), lambda parts: parts.ab_test)

    @classmethod
    def from_snapshot(cls, s: StatsSnapshot, ab: AbStatsParts | None = None) -> CampaignStats:
        r = analytics.rates(s)
        return cls(
            pk=s.campaign_id,
            ab=ab,
            campaign_id=to_global_id("Campaign", s.campaign_id),
            recipients=s.recipients,
            sent=s.sent,
            delivered=s.delivered,
            bounced=s.bounced,
            complained=s.complained,
            opens=s.opens,
            unique_opens=s.unique_opens,
            clicks=s.clicks,
            unique_clicks=s.unique_clicks,
            unsubscribed=s.unsubscribed,
            open_rate=r.open_rate,
            click_rate=r.click_rate,
            bounce_rate=r.bounce_rate,
            complaint_rate=r.complaint_rate,
        )


@strawberry.type(name="CampaignLinkStats", description="Clicks on one tracked link of a campaign.")
class CampaignLinkStats:
    url: str
    clicks: int
    unique_clicks: int

    @classmethod
    def from_model(cls, row: CampaignLink) -> CampaignLinkStats:
        return cls(url=row.url, clicks=row.clicks, unique_clicks=row.unique_clicks)


@strawberry.type(description="Events of one campaign in one time bucket, by type.")
class TimelinePoint:
    start: datetime = strawberry.field(description="Start of the bucket (UTC).")
    delivered: int
    bounced: int
    complained: int
    opens: int
    clicks: int
    unsubscribed: int
    dropped: int
    deferred: int

    @classmethod
    def from_point(cls, p: analytics.TimelinePoint) -> TimelinePoint:
        c = {t.value: n for t, n in p.counts.items()}
        return cls(
            start=p.start,
            delivered=c.get("DELIVERED", 0),
            bounced=c.get("BOUNCE", 0),
            complained=c.get("COMPLAINT", 0),
            opens=c.get("OPEN", 0),
            clicks=c.get("CLICK", 0),
            unsubscribed=c.get("UNSUBSCRIBE", 0),
            dropped=c.get("DROPPED", 0),
            deferred=c.get("DEFERRED", 0),
        )


class _Loaders:
    def __init__(self, info: Info) -> None:
        reads = info.context.loaders.session

        async def links(ids: Sequence[int]) -> list[list[CampaignLink]]:
            async with reads() as session:
                found = await analytics.links_by_campaign(session, ids)
            return [found.get(i, []) for i in ids]

        self.stats: Batched[StatsSnapshot | None] = Batched(reads, analytics.stats_by_campaign, lambda: None)
        self.links: DataLoader[int, list[CampaignLink]] = DataLoader(load_fn=links)


def _loaders(info: Info) -> _Loaders:
    loaders = info.context.extra.get("analytics")
    if not isinstance(loaders, _Loaders):
        loaders = info.context.extra["analytics"] = _Loaders(info)
    return loaders


class _HasPk(Protocol):
    pk: int


def campaign_stats(root: _HasPk, info: Info) -> CampaignStats | Awaitable[CampaignStats]:
    pk = root.pk
    return then(
        _loaders(info).stats.now_or_later(pk),
        lambda snapshot: CampaignStats.from_snapshot(snapshot or StatsSnapshot(campaign_id=pk)),
    )


async def fill_stats(info: Info, campaign_ids: Sequence[int]) -> None:
    """Read ahead the stats of a page of campaigns, in the session the request holds."""
    loaders = info.context.loaders
    async with loaders.session() as session:
        await _loaders(info).stats.fill(session, campaign_ids)


async def campaign_links(root: _HasPk, info: Info) -> list[CampaignLinkStats]:
    """Clicked links, most clicked first."""
    return [CampaignLinkStats.from_model(row) for row in await _loaders(info).links.load(root.pk)]


async def campaign_timeline(
    root: _HasPk,
    info: Info,
    bucket: analytics.TimelineBucket = analytics.TimelineBucket.HOUR,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[TimelinePoint]:
    """Events per bucket and type, oldest first; buckets without events are left out."""
    points = await info.context.loaders.campaign_timeline.load((root.pk, TimelineArgs(bucket, since, until)))
    return [TimelinePoint.from_point(p) for p in points]
