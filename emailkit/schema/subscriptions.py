"""The root Subscription type: live campaign progress, live campaign stats, live import progress and live flow
stats.

Each one subscribes to its pub/sub channel before reading the current state, so that no update committed in
between is missed, yields that state at once, then one value per message until the state is final.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from graphql import GraphQLError

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.domain.audience.imports.progress import ImportState
from emailkit.domain.audience.imports.progress import progress_channel as import_channel
from emailkit.domain.automation.live import FlowStatsSnapshot, flow_stats_channel, flow_stats_snapshot
from emailkit.domain.feedback import analytics
from emailkit.domain.feedback.live import DECIDED, StatsSnapshot, stats_channel
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending.ab.standings import standings_of
from emailkit.domain.sending.progress import ProgressSnapshot, RateEstimator, progress_channel
from emailkit.schema.context import Info
from emailkit.schema.live import live_updates
from emailkit.schema.relay import decode_id_or_none
from emailkit.schema.types.abtests import AbStatsParts
from emailkit.schema.types.analytics import CampaignStats
from emailkit.schema.types.campaigns import CampaignProgress
from emailkit.schema.types.flows import FlowStatsUpdate
from emailkit.schema.types.imports import ImportProgress


async def _ab_parts(runtime: Runtime, campaign_id: int) -> AbStatsParts:
    """The A/B test's per-variant counters as they are now (the stats message carries the campaign's only)."""
    async with runtime.db.session() as session:
        return AbStatsParts.of(await standings_of(session, campaign_id))


async def _flow_stats(runtime: Runtime, flow_id: int) -> FlowStatsSnapshot | None:
    async with runtime.db.session() as session:
        return await flow_stats_snapshot(session, flow_id)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Live counters of a campaign until it reaches a final state.")
    async def campaign_progress(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[CampaignProgress, None]:
        pk = decode_id_or_none(id, "Campaign")
        runtime = info.context.runtime
        if pk is None:
            raise GraphQLError("Not a Campaign ID", extensions={"code": "INVALID_ID"})
        estimator = RateEstimator()
        async with live_updates(runtime, progress_channel(pk)) as updates:
            async with runtime.db.session() as s:
                row = await s.get(CampaignRow, pk)
            if row is None:
                raise GraphQLError("Campaign not found", extensions={"code": "NOT_FOUND"})
            snapshot = ProgressSnapshot.of(row)
            yield CampaignProgress.of(snapshot, estimator.estimate(snapshot))
            if snapshot.final:
                return
            async for message in updates:
                snapshot = ProgressSnapshot.from_message(message, campaign_id=pk)
                yield CampaignProgress.of(snapshot, estimator.estimate(snapshot))
                if snapshot.final:
                    return

    @strawberry.subscription(
        description=(
            "A campaign's stats: the current value at once, then again as events arrive (a few per second "
            "at most)."
        )
    )
    async def campaign_stats(self, info: Info, id: strawberry.ID) -> AsyncGenerator[CampaignStats, None]:
        pk = decode_id_or_none(id, "Campaign")
        if pk is None:
            raise GraphQLError("Not a Campaign ID", extensions={"code": "INVALID_ID"})
        runtime = info.context.runtime
        async with live_updates(runtime, stats_channel(pk)) as updates:
            async with runtime.db.session() as session:
                current = (await analytics.stats_by_campaign(session, [pk])).get(pk)
                ab = AbStatsParts.of(await standings_of(session, pk))
            if current is None:
                raise GraphQLError("Campaign not found", extensions={"code": "NOT_FOUND"})
            tested = ab.ab_test is not None
            yield CampaignStats.from_snapshot(current, ab)
            async for message in updates:
                update = StatsSnapshot.from_message(message)
                # Counters only grow: an update older than what was already sent is skipped, unless it says
                # the A/B test's winner was chosen.
                if update.total > current.total or message.get(DECIDED):
                    current = update if update.total >= current.total else current
                    if tested:
                        ab = await _ab_parts(runtime, pk)
                    yield CampaignStats.from_snapshot(current, ab)

    @strawberry.subscription(description="Live counters of an import, ending once it FINISHED or FAILED.")
    async def import_progress(self, info: Info, id: strawberry.ID) -> AsyncGenerator[ImportProgress, None]:
        pk = decode_id_or_none(id, "Import")
        if pk is None:
            raise GraphQLError("Not an Import ID", extensions={"code": "INVALID_ID"})
        runtime = info.context.runtime
        async with live_updates(runtime, import_channel(pk)) as updates:
            async with runtime.db.session() as session:
                row = await session.get(ImportRow, pk)
            if row is None:
                raise GraphQLError("Import not found", extensions={"code": "NOT_FOUND"})
            state = ImportState.of(row)
            yield ImportProgress.of(state)
            if state.final:
                return
            async for message in updates:
                state = ImportState.from_message(message)
                yield ImportProgress.of(state)
                if state.final:
                    return

    @strawberry.subscription(
        description=(
            "A flow's counters and its steps': the current values at once, then again whenever they change (a "
            "few times per second at most)."
        )
    )
    async def flow_stats(self, info: Info, id: strawberry.ID) -> AsyncGenerator[FlowStatsUpdate, None]:
        pk = decode_id_or_none(id, "Flow")
        if pk is None:
            raise GraphQLError("Not a Flow ID", extensions={"code": "INVALID_ID"})
        runtime = info.context.runtime
        async with live_updates(runtime, flow_stats_channel(pk)) as updates:
            current = await _flow_stats(runtime, pk)
            if current is None:
                raise GraphQLError("Flow not found", extensions={"code": "NOT_FOUND"})
            yield FlowStatsUpdate.of(current)
            # A message only says that the counters changed (they also go down): read them back each time.
            async for _ in updates:
                latest = await _flow_stats(runtime, pk)
                if latest is None:
                    return
                if latest != current:
                    current = latest
                    yield FlowStatsUpdate.of(current)
