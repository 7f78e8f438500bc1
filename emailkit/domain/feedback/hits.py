"""Our own tracking hits (opens, clicks, unsubscribes) turned into feedback events.

Opens and clicks arrive as compact tuples from the tracking routes and are written in bulk by the hit
buffer through :class:`HitWriter`. An unsubscribe is written at once by :func:`unsubscribe_delivery`: it
must have taken effect before the page (or the mailbox provider's one-click POST) gets its answer.

A hit names a delivery only (its signed token is the credential): each is recorded in its delivery's
workspace, found by the recording itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, current_scope
from emailkit.db.tables.feedback import EventType
from emailkit.db.tables.sending import Delivery
from emailkit.db.types import utcnow
from emailkit.domain.audience.preferences import centre, scope
from emailkit.domain.feedback import FeedbackPolicy, IncomingEvent, Recorded, publish, record
from emailkit.domain.loopthread import LoopThread
from emailkit.domain.tenancy import scope_of_row
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.metrics import record as metrics

log = logging.getLogger("emailkit.tracking")

# (type, delivery id, unix time, url, ip, user agent): a plain tuple because building it is on the hot path
# of every pixel and redirect, and a dataclass costs several times more.
Hit = tuple[EventType, int, float, str | None, str | None, str | None]


def _events(batch: Sequence[Hit], anonymous: bool) -> list[IncomingEvent]:
    return [
        IncomingEvent(
            type=kind,
            delivery_id=delivery_id,
            occurred_at=datetime.fromtimestamp(at, UTC),
            url=url,
            ip=ip,
            user_agent=agent,
            anonymous=anonymous,
        )
        for kind, delivery_id, at, url, ip, agent in batch
    ]


class HitWriter:
    """The hit buffer's sink: one batch of hits, one transaction of the feedback recorder.

    The recording runs on a :class:`LoopThread` with an engine of its own, so its Python work never stalls
    the loop answering pixel and redirect requests; the live stats it produces are published from the
    caller's loop, where ``live`` belongs.
    """

    def __init__(
        self,
        database_url: str,
        *,
        anonymous: bool,
        live: CoalescingPublisher | None = None,
        live_db: Database | None = None,
        pool_size: int = 2,
    ) -> None:
        self.anonymous = anonymous
        self.live = live
        self.live_db = live_db
        self.policy = FeedbackPolicy()
        self.db = Database(database_url, pool_size=pool_size)
        self.thread = LoopThread("emailkit-tracking-writer")

    async def __call__(self, batch: Sequence[Hit]) -> None:
        started = time.perf_counter()
        recorded = await self.thread.run(self._record(batch))
        metrics.hit_flush(time.perf_counter() - started)
        opens = sum(1 for hit in batch if hit[0] is EventType.OPEN)
        metrics.tracking_hits("open", opens)
        metrics.tracking_hits("click", len(batch) - opens)
        if self.live is None or self.live_db is None:
            return
        try:
            await publish(self.live_db, recorded, self.live)
        except Exception:
            # The hits are committed: failing here must not make the buffer write them a second time.
            log.exception("publishing live stats after %d tracking hits failed", len(batch))

    async def _record(self, batch: Sequence[Hit]) -> Recorded:
        events = _events(batch, self.anonymous)
        # A batch holds hits of every workspace's mail: system work, each row written in its delivery's.
        with all_workspaces():
            async with self.db.transaction() as session:
                return await record(session, events, self.policy, utcnow())

    async def close(self) -> None:
        await self.thread.close(final=self.db.dispose)


@dataclass(frozen=True, slots=True)
class UnsubscribeOutcome:
    email: str
    # Subscriptions this call moved to UNSUBSCRIBED (0 when repeated).
    changed: int


def unsubscribe_key(delivery_id: int) -> str:
    """Dedupe key of the UNSUBSCRIBE event of a delivery: repeating the request counts it once."""
    return hashlib.sha256(f"emailkit-unsubscribe\x1f{delivery_id}".encode()).hexdigest()[:32]


async def unsubscribe_delivery(
    db: Database,
    delivery_id: int,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    live: CoalescingPublisher | None = None,
    every_list: bool = False,
) -> UnsubscribeOutcome | None:
    """Unsubscribe a delivery's recipient from every list through which the delivery could reach them (or,
    with ``every_list``, from every list there is) and record the UNSUBSCRIBE event, in one transaction.
    None when the delivery is unknown.

    Idempotent: a repeat records no second event (the dedupe key is the delivery's). It still unsubscribes,
    so an old link keeps working for someone who subscribed again since.

    Acts in the workspace in scope when there is one (another workspace's delivery is then unknown), else in
    the delivery's own workspace.
    """
    in_scope = current_scope()
    if in_scope is not None and in_scope.workspace_id is not None:
        return await _unsubscribe(db, delivery_id, ip, user_agent, live, every_list)
    async with scope_of_row(db, Delivery, delivery_id) as found:
        return await _unsubscribe(db, delivery_id, ip, user_agent, live, every_list) if found else None


async def _unsubscribe(
    db: Database,
    delivery_id: int,
    ip: str | None,
    user_agent: str | None,
    live: CoalescingPublisher | None,
    every_list: bool,
) -> UnsubscribeOutcome | None:
    async with db.transaction() as session:
        row = await centre.recipient_of(session, delivery_id)
        if row is None:
            return None
        email, subscriber_id = row
        changed = 0
        now = utcnow()
        if subscriber_id is not None:
            recipients = {None if every_list else delivery_id: [subscriber_id]}
            changed = await scope.unsubscribe_recipients(session, recipients, now)
        event = IncomingEvent(
            type=EventType.UNSUBSCRIBE,
            delivery_id=delivery_id,
            ip=ip,
            user_agent=user_agent,
            dedupe_key=unsubscribe_key(delivery_id),
        )
        recorded = await record(session, [event], FeedbackPolicy(), now)
    await publish(db, recorded, live)
    return UnsubscribeOutcome(email, changed + recorded.summary.unsubscribed)
