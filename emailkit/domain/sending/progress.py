"""Live campaign progress: what workers publish, and how a reader turns counters into a rate and an ETA."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from emailkit.db.tables.sending import FINAL_CAMPAIGN_STATUSES, Campaign, CampaignStatus
from emailkit.domain.throttle import CoalescingPublisher


def progress_channel(campaign_id: int) -> str:
    return f"campaign:{campaign_id}:progress"


def snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "status": campaign.status.value,
        "statusReason": campaign.status_reason,
        "recipients": campaign.recipients_count,
        "sent": campaign.sent_count,
        "failed": campaign.failed_count,
        "skipped": campaign.skipped_count,
        "inDoubt": campaign.in_doubt_count,
        "at": time.time(),
    }


class ProgressReporter:
    """Publishes a campaign's counters, coalesced to a few messages per second per campaign."""

    def __init__(self, publisher: CoalescingPublisher) -> None:
        self.publisher = publisher

    async def report(self, campaign: Campaign, *, final: bool = False) -> None:
        message = snapshot(campaign)
        channel = progress_channel(campaign.id)
        if final or campaign.status in FINAL_CAMPAIGN_STATUSES or campaign.status is CampaignStatus.PAUSED:
            await self.publisher.publish_now(channel, message)
        else:
            await self.publisher.publish(channel, message)


@dataclass
class Estimate:
    rate_per_second: float
    eta_seconds: float | None


class RateEstimator:
    """Sending rate over a sliding window of (time, processed) samples."""

    def __init__(self, window_seconds: float = 10.0) -> None:
        self.window = window_seconds
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, processed: int, remaining: int, running: bool) -> Estimate:
        self.samples.append((at, processed))
        while len(self.samples) > 2 and at - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, p0 = self.samples[0]
        span = at - t0
        rate = (processed - p0) / span if span > 0 else 0.0
        rate = max(rate, 0.0)
        # Only a running campaign has a time to completion: a draft, paused or ended one has none.
        eta = None
        if running:
            eta = 0.0 if remaining == 0 else remaining / rate if rate > 0 else None
        return Estimate(
            rate_per_second=round(rate, 2), eta_seconds=round(eta, 1) if eta is not None else None
        )
