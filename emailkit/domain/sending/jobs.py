"""Jobs: what one transaction plans for the workers, handed to the queue by ``dispatch`` once it has committed.

A value with no behaviour, so that the transitions which plan work (start, resume, retry, a transactional
message) can say what to enqueue without importing the runtime that enqueues it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Jobs:
    """What a transaction planned for the workers: campaign batches and transactional deliveries."""

    batch_ids: Sequence[int] = ()
    transactional_ids: Sequence[int] = ()
    # Seconds before the batches may run (a batch given back with recipients to retry later).
    delay: float | None = None
