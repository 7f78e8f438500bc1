"""The feedback loop: provider and tracking events recorded, counted and acted upon.

Public API (stable; the tracking routes and the webhook route code against it)::

    from emailkit.domain.feedback import FeedbackPolicy, IncomingEvent, RecordSummary, record_events

    @dataclass(frozen=True, slots=True)
    class IncomingEvent:                      # one of our own tracking hits
        type: EventType                       # OPEN, CLICK, UNSUBSCRIBE (any EventType is accepted)
        delivery_id: int | None = None        # from the signed token; campaign and subscriber follow from it
        occurred_at: datetime | None = None   # aware; None = the recording time
        url: str | None = None                # CLICK: the original (un-tracked) URL
        ip: str | None = None
        user_agent: str | None = None
        email: str | None = None              # only when there is no delivery (e.g. a list-level unsubscribe)
        subscriber_id: int | None = None      # idem
        campaign_id: int | None = None        # idem
        dedupe_key: str | None = None         # any string; a repeat with the same key stores nothing
        anonymous: bool = False               # privacy mode (OPEN/CLICK only): counted for the campaign, but
                                              # no delivery, subscriber, address, ip or user agent is kept,
                                              # and the hit never counts as a unique open/click
        bounce_type: BounceType | None = None
        reason: str | None = None
        provider: str = "emailkit"
        metadata: Mapping[str, str] = {}

    async def record_events(
        db: Database,
        events: Sequence[IncomingEvent | NormalizedEvent],
        *,
        policy: FeedbackPolicy | None = None,        # soft-bounce and complaint thresholds
        live: CoalescingPublisher | None = None,     # runtime.live: campaignStats pushed after the commit
        now: datetime | None = None,
    ) -> RecordSummary                               # received, stored, duplicates, uncorrelated, ...

    # The same inside the caller's own transaction; publish once it committed:
    async def record(session, events, policy, now) -> Recorded
    async def publish(db, recorded, live) -> None

One call is one transaction: events are correlated with deliveries (our metadata, else the provider
message id, else the latest delivery to that address), deduplicated, stored, counted into the per-campaign
counters, and the suppression / unsubscribe / complaint-guard policy is applied. A batch of 1,000 costs about
ten statements, whatever its size (on PostgreSQL the event rows go in with one INSERT of array parameters).

``record_events`` runs for all workspaces: each event is stored, counted and acted upon in the workspace of
its delivery (else campaign, else subscriber); events tied to nothing go to the default workspace. ``record``
runs in the caller's scope (all workspaces, or one workspace whose rows alone it then sees and writes).

Other entry points: :func:`is_suppressed` (transactional sends), the suppression services
(:mod:`.suppressions`), the analytics readers (:mod:`.analytics`), and :func:`maintain_event_partitions`
(periodic: monthly partitions ahead on PostgreSQL, old dedupe keys pruned).
"""

from emailkit.domain.audience.suppressions import email_hash, is_suppressed, suppressed_among
from emailkit.domain.feedback.partitions import ensure_event_partitions, maintain_event_partitions
from emailkit.domain.feedback.recording import Recorded, publish, record, record_events
from emailkit.domain.feedback.types import FeedbackPolicy, IncomingEvent, RecordSummary

__all__ = [
    "FeedbackPolicy",
    "IncomingEvent",
    "RecordSummary",
    "Recorded",
    "email_hash",
    "ensure_event_partitions",
    "is_suppressed",
    "maintain_event_partitions",
    "publish",
    "record",
    "record_events",
    "suppressed_among",
]
