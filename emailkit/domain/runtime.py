"""What the use cases need from the outside world, assembled once by a composition root."""

from __future__ import annotations

from dataclasses import dataclass

from emailkit.domain.db import Database
from emailkit.domain.ports import JobQueue, PubSub
from emailkit.domain.throttle import CoalescingPublisher


@dataclass
class Runtime:
    db: Database
    secret_key: str
    public_url: str
    max_page_size: int = 250
    debug: bool = False
    # Background work; None where nothing may be enqueued (e.g. tests of the API alone).
    jobs: JobQueue | None = None
    # Live updates. `live` throttles publishing per channel; it defaults to one over `pubsub`, per runtime
    # because it schedules its flushes on the runtime's event loop.
    pubsub: PubSub | None = None
    live: CoalescingPublisher | None = None

    def __post_init__(self) -> None:
        if self.live is None and self.pubsub is not None:
            self.live = CoalescingPublisher(self.pubsub)
