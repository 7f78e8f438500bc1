"""What the send loop asks of the deliveries ledger, and the values that cross between them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import Campaign, CampaignBatch, DeliveryStatus
from emailkit.domain.sending.ab.split import Split
from emailkit.domain.sending.frequency_cap import FrequencyCap
from emailkit.domain.sending.local_time import LocalSchedule

IN_DOUBT_NOTE = "outcome unknown: the worker stopped while handing this message to the provider"


class LeaseLost(Exception):
    """Another worker took the batch over (this one was presumed dead): it must not hand over anything more."""


@dataclass(frozen=True)
class Admission:
    """What decides a new ledger row besides the audience: the frequency cap (a capped person is SKIPPED with
    reason ``frequency_cap``) and, for a local-time campaign, when each recipient is due (``not_before``)."""

    now: datetime
    cap: FrequencyCap | None = None
    local: LocalSchedule | None = None


@dataclass
class Pending:
    """A QUEUED delivery of the chunk being sent, with what its render needs."""

    delivery_id: int
    subscriber_id: int | None
    email: str
    name: str
    attributes: dict[str, Any]
    attempts: int
    # The A/B test variant recorded on the delivery (None: the campaign has no test).
    variant_id: int | None = None
    # More for the templates to see (a flow's trigger event as `event`).
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Sent:
    """A delivery the provider accepted."""

    delivery_id: int
    provider_message_id: str | None
    attempts: int
    # Its A/B test variant, whose sent counter it adds to.
    variant_id: int | None = None


@dataclass(frozen=True)
class Failed:
    """A delivery the provider refused: QUEUED again to be retried, or FAILED for good."""

    delivery_id: int
    status: DeliveryStatus
    attempts: int
    error: str
    # How long the provider asked to wait before the next attempt, if it said.
    retry_after: float | None = None


@dataclass
class Recorded:
    """What a ``record`` call wrote: a delivery another worker had settled meanwhile is not among it."""

    sent: int = 0
    failures: list[Failed] = field(default_factory=list)
    # The campaign as the recording left it, when asked for (the progress report reads it).
    campaign: Campaign | None = None

    @property
    def failed(self) -> int:
        return sum(1 for f in self.failures if f.status is DeliveryStatus.FAILED)


class BatchLedger(Protocol):
    """The database writes of a batch run: claim and lease, materialise, settle, hand over, record, release.

    Every write on a batch's deliveries checks that the batch is still this run's claim (or that the rows are
    still in the state this run left them in), so a worker presumed dead changes nothing its successor owns.
    """

    async def claim(self, batch_id: int) -> CampaignBatch | None:
        """Take a PENDING batch (or one whose lease ran out) of a RUNNING campaign; None when it is not free."""
        ...

    async def extend_lease(self, batch: CampaignBatch) -> bool:
        """Renew this claim's lease; False when the batch is no longer this claim's (nothing is written)."""
        ...

    async def materialise(
        self,
        session: AsyncSession,
        batch: CampaignBatch,
        split: Split | None = None,
        admission: Admission | None = None,
    ) -> int:
        """Insert the batch's ledger rows (idempotent); returns how many new SKIPPED rows were added.

        With an A/B test's `split`, only the recipients it gives a variant now, each with that variant; with an
        `admission`, new rows are held to its frequency cap and local schedule."""
        ...

    async def settle_in_doubt(self, session: AsyncSession, batch: CampaignBatch) -> int:
        """SENDING rows left by a dead worker may or may not have gone out: IN_DOUBT, never sent again."""
        ...

    def lend_connection(self, batch: CampaignBatch) -> AbstractAsyncContextManager[None]:
        """Hold what the batch's per-chunk statements run on while it sends."""
        ...

    async def next_chunk(
        self, batch: CampaignBatch, after_id: int, limit: int, due_by: datetime | None = None
    ) -> tuple[Campaign | None, list[Pending]]:
        """Extend the lease, then read the campaign's state and the next QUEUED deliveries (with `due_by`, only
        those due by then: a local-time campaign's)."""
        ...

    async def next_due(self, batch: CampaignBatch, after: datetime) -> datetime | None:
        """When the first of the batch's QUEUED deliveries held until after `after` is due; None: none is."""
        ...

    def sending_via(
        self, batch: CampaignBatch, provider_name: str, sender_id: int | None
    ) -> AbstractContextManager[None]:
        """While the block runs, the batch's deliveries marked SENDING record this provider and sender (by
        default: the ledger's provider name and the default sender, NULL)."""
        ...

    async def mark_sending(self, batch: CampaignBatch, delivery_ids: Sequence[str]) -> None:
        """Commit QUEUED deliveries as SENDING right before the provider gets the final go for them.

        Raises LeaseLost when the batch is no longer this claim's.
        """
        ...

    async def record(
        self, batch: CampaignBatch, sent: Sequence[Sent], failed: Sequence[Failed], *, with_campaign: bool
    ) -> Recorded:
        """Store results and add them to the campaign's counters, in one transaction."""
        ...

    async def release(self, batch: CampaignBatch, *, done: bool) -> None:
        """Give the batch back (or mark it done), unless another worker has taken it over meanwhile."""
        ...
