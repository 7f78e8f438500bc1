"""Live campaign progress: the message workers publish, and how a reader turns counters into a rate and an ETA."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emailkit.db.tables.sending import FINAL_CAMPAIGN_STATUSES, Campaign, CampaignStatus
from emailkit.domain.throttle import CoalescingPublisher


def progress_channel(campaign_id: int) -> str:
    return f"campaign:{campaign_id}:progress"


@dataclass(frozen=True)
class ProgressSnapshot:
    """A campaign's status and counters at one moment; the message of its live progress channel."""

    campaign_id: int
    status: CampaignStatus
    status_reason: str | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    in_doubt: int
    # When the counters were read (Unix seconds): the reader's rate is over these times, not arrival times.
    at: float

    @classmethod
    def of(cls, campaign: Campaign) -> ProgressSnapshot:
        return cls(
            campaign_id=campaign.id,
            status=campaign.status,
            status_reason=campaign.status_reason,
            recipients=campaign.recipients_count,
            sent=campaign.sent_count,
            failed=campaign.failed_count,
            skipped=campaign.skipped_count,
            in_doubt=campaign.in_doubt_count,
            at=time.time(),
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any], *, campaign_id: int) -> ProgressSnapshot:
        """Read a message of the campaign's channel (which names the campaign, so its `id` is not needed).

        `inDoubt`, `statusReason` and `at` may be missing: messages from older workers had no `inDoubt`.
        """
        reason, at = message.get("statusReason"), message.get("at")
        return cls(
            campaign_id=campaign_id,
            status=CampaignStatus(str(message["status"])),
            status_reason=reason if isinstance(reason, str) else None,
            recipients=int(message["recipients"]),
            sent=int(message["sent"]),
            failed=int(message["failed"]),
            skipped=int(message["skipped"]),
            in_doubt=int(message.get("inDoubt", 0)),
            at=float(at) if isinstance(at, int | float) else 0.0,
        )

    def message(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id,
            "status": self.status.value,
            "statusReason": self.status_reason,
            "recipients": self.recipients,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "inDoubt": self.in_doubt,
            "at": self.at,
        }

    @property
    def processed(self) -> int:
        return self.sent + self.failed + self.skipped + self.in_doubt

    @property
    def final(self) -> bool:
        return self.status in FINAL_CAMPAIGN_STATUSES


class ProgressReporter:
    """Publishes a campaign's counters, coalesced to a few messages per second per campaign."""

    def __init__(self, publisher: CoalescingPublisher) -> None:
        self.publisher = publisher

    async def report(self, campaign: Campaign, *, final: bool = False) -> None:
        snapshot = ProgressSnapshot.of(campaign)
        channel = progress_channel(campaign.id)
        if final or snapshot.final or campaign.status is CampaignStatus.PAUSED:
            await self.publisher.publish_now(channel, snapshot.message())
        else:
            await self.publisher.publish(channel, snapshot.message())


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

    def estimate(self, snapshot: ProgressSnapshot) -> Estimate:
        """The rate and ETA with this snapshot added."""
        processed = snapshot.processed
        return self.add(
            snapshot.at,
            processed,
            max(0, snapshot.recipients - processed),
            snapshot.status is CampaignStatus.RUNNING,
        )
