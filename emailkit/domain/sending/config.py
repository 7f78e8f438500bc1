"""The send settings, each with its one default.

:class:`emailkit.settings.Settings` reads them from ``EMAILKIT_*`` variables (its fields default from here),
the composition root hands them to the runtime's ``SendingSetup``, and the scheduler and the send pipeline read
them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from emailkit.domain.sending.frequency_cap import FrequencyCap

DEFAULT_CHUNK = 200
MAX_CHUNK = 1000


@dataclass(frozen=True)
class SendingConfig:
    # Recipients per batch: the unit of work one worker claims.
    batch_size: int = 1000
    # A worker that has not touched its batch for this long is presumed dead and the batch is taken over.
    lease_seconds: float = 120.0
    # Recipients rendered, handed over and recorded together within a batch; None: see chunk_for.
    chunk_size: int | None = None
    # Attempts per recipient for transient errors before FAILED, and the backoff between them.
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # Pause the campaign when more than this share of attempted recipients failed permanently.
    error_budget_ratio: float = 0.25
    error_budget_min_sample: int = 50
    # Adds a mailto: to List-Unsubscribe.
    unsubscribe_mailto: str | None = None
    # The domain whose MX is `emailkit bounce-server`: VERP envelope senders and the List-Unsubscribe mailto:
    # are addresses there (it replaces unsubscribe_mailto, which nothing reads back).
    bounce_domain: str | None = None
    # PENDING batches nobody has picked up for this long are enqueued again (lost queue messages).
    requeue_after_seconds: float = 60.0
    # The timezone of people with no valid `timezone` attribute reached through a list without a default
    # (an IANA name, checked at start-up): local-time campaigns, and automation's waits and dates.
    default_timezone: str = "UTC"
    # At most so many marketing messages per person within a window, across campaigns (and flows); None: off.
    marketing_cap: FrequencyCap | None = None

    def chunk_for(self, max_batch_size: int) -> int:
        """The chunk size for a provider taking at most ``max_batch_size`` messages per ``send_batch``: the
        configured one, else 200 or the provider's own size when it is larger (up to 1000), so that an API
        taking 500 or 1000 personalised messages per request gets full requests rather than 200 at a time."""
        if self.chunk_size is not None:
            return self.chunk_size
        return max(DEFAULT_CHUNK, min(max_batch_size, MAX_CHUNK))
