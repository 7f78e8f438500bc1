"""DataLoaders, one set per request, so every relation is fetched in one query per batch (no N+1)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Segment, Subscriber, Subscription
from emailkit.db.tables.automation import (
    Flow,
    FlowRun,
    FlowRunStatus,
    FlowStepRun,
    FlowStepStats,
    FlowVersion,
)
from emailkit.db.tables.content import Template
from emailkit.db.tables.feedback import Event
from emailkit.db.tables.sending import Campaign, Delivery, DeliveryStatus
from emailkit.domain import per_parent
from emailkit.domain.audience import lists, subscribers
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.automation import flows, reading
from emailkit.domain.child_pages import ChildPage
from emailkit.domain.content import templates
from emailkit.domain.counting import DEFAULT_EXACT_LIMIT, Count
from emailkit.domain.feedback.analytics import TimelineBucket, TimelinePoint
from emailkit.domain.sending import campaigns

T = TypeVar("T")
V = TypeVar("V")
A = TypeVar("A", bound=Hashable)

# Connections one request's reads (pages and DataLoader batches) hold at once. A query selecting many relations,
# or many aliases, waits for its own turn instead of draining the pool that other requests need.
MAX_CONNECTIONS_PER_REQUEST = 4

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


class PageArgs(NamedTuple):
    """The arguments of a nested connection; parents asked with the same ones share a statement."""

    first: int
    after: int | None
    filter: Hashable = None


class TimelineArgs(NamedTuple):
    bucket: TimelineBucket
    since: datetime | None
    until: datetime | None


class Batched(DataLoader[int, V]):
    """A DataLoader by id that a page can also fill ahead, in the session it already holds.

    A field whose value is already here resolves without an await (:meth:`now_or_later`): graphql-core then
    completes it on its synchronous path, with no task, future or gather per node, several times cheaper on a
    page of 50 nodes than one awaited load per node, even when every load hits the same batch.
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[Mapping[int, V]]],
        default: Callable[[], V],
    ) -> None:
        self._fetch = fetch
        self._default = default

        async def load(keys: list[int]) -> list[V]:
            async with session_factory() as session:
                found = await fetch(session, keys)
            return [found.get(k, default()) for k in keys]

        super().__init__(load_fn=load)

    async def fill(self, session: AsyncSession, keys: Iterable[int]) -> None:
        missing = [k for k in dict.fromkeys(keys) if self.cache_map.get(k) is None]
        if missing:
            found = await self._fetch(session, missing)
            self.prime_many({k: found.get(k, self._default()) for k in missing})

    def now_or_later(self, key: int) -> V | Awaitable[V]:
        future = self.cache_map.get(key)
        if future is not None and future.done() and not future.cancelled() and future.exception() is None:
            return future.result()
        return self.load(key)


def then(value: V | Awaitable[V], convert: Callable[[V], T]) -> T | Awaitable[T]:
    """``convert`` applied to a value now, or once it arrives."""
    if isinstance(value, Awaitable):

        async def later() -> T:
            return convert(await value)

        return later()
    return convert(value)


async def load_one(loader: DataLoader[int, V | None], pk: int | None, convert: Callable[[V], T]) -> T | None:
    """The object that a nullable id names, read through the request's loader; None without an id or a row."""
    if pk is None:
        return None
    row = await loader.load(pk)
    return convert(row) if row is not None else None


def _loader(
    session_factory: SessionFactory,
    fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[Mapping[int, V]]],
    default: Callable[[], Any] = lambda: None,
) -> Batched[Any]:
    return Batched(session_factory, fetch, default)


def _per_parent(
    session_factory: SessionFactory, fetch: Callable[[AsyncSession, list[int], A], Awaitable[Mapping[int, V]]]
) -> DataLoader[tuple[int, A], V]:
    """A loader keyed by (parent id, arguments): one statement per distinct arguments in a batch."""

    async def load(keys: list[tuple[int, A]]) -> list[V]:
        parents: dict[A, list[int]] = defaultdict(list)
        for parent, args in keys:
            parents[args].append(parent)
        found: dict[tuple[int, A], V] = {}
        async with session_factory() as session:
            for args, ids in parents.items():
                for parent, value in (await fetch(session, ids, args)).items():
                    found[(parent, args)] = value
        return [found[k] for k in keys]

    return DataLoader(load_fn=load)


async def _delivery_pages(
    session: AsyncSession, ids: list[int], args: PageArgs
) -> Mapping[int, ChildPage[Delivery]]:
    status = args.filter if isinstance(args.filter, DeliveryStatus) else None
    return await per_parent.delivery_pages(session, ids, first=args.first, after=args.after, status=status)


def _delivery_counts(exact_limit: int) -> Callable[..., Awaitable[Mapping[int, Count]]]:
    async def fetch(
        session: AsyncSession, ids: list[int], status: DeliveryStatus | None
    ) -> Mapping[int, Count]:
        return await per_parent.delivery_counts(session, ids, status, exact_limit=exact_limit)

    return fetch


async def _event_pages(
    session: AsyncSession, ids: list[int], args: PageArgs
) -> Mapping[int, ChildPage[Event]]:
    return await per_parent.event_pages(session, ids, first=args.first, after=args.after)


def _event_counts(exact_limit: int) -> Callable[..., Awaitable[Mapping[int, Count]]]:
    async def fetch(session: AsyncSession, ids: list[int], _: None) -> Mapping[int, Count]:
        return await per_parent.event_counts(session, ids, exact_limit=exact_limit)

    return fetch


async def _timelines(
    session: AsyncSession, ids: list[int], args: TimelineArgs
) -> Mapping[int, list[TimelinePoint]]:
    return await per_parent.timelines(session, ids, args.bucket, since=args.since, until=args.until)


async def _flow_run_pages(
    session: AsyncSession, ids: list[int], args: PageArgs
) -> Mapping[int, ChildPage[FlowRun]]:
    status = args.filter if isinstance(args.filter, FlowRunStatus) else None
    return await reading.run_pages(session, ids, first=args.first, after=args.after, status=status)


def _flow_run_counts(exact_limit: int) -> Callable[..., Awaitable[Mapping[int, Count]]]:
    async def fetch(
        session: AsyncSession, ids: list[int], status: FlowRunStatus | None
    ) -> Mapping[int, Count]:
        return await reading.run_counts(session, ids, status, exact_limit=exact_limit)

    return fetch


async def _subscriber_flow_run_pages(
    session: AsyncSession, ids: list[int], args: PageArgs
) -> Mapping[int, ChildPage[FlowRun]]:
    return await reading.subscriber_run_pages(session, ids, first=args.first, after=args.after)


def _subscriber_flow_run_counts(exact_limit: int) -> Callable[..., Awaitable[Mapping[int, Count]]]:
    async def fetch(session: AsyncSession, ids: list[int], _: None) -> Mapping[int, Count]:
        return await reading.subscriber_run_counts(session, ids, exact_limit=exact_limit)

    return fetch


class Loaders:
    """The request's DataLoaders and the sessions their reads run in.

    ``shared`` (one HTTP operation): every read of the request runs, one at a time, in a single session opened
    at the first read and closed by :meth:`release` when the operation ends. Each session costs a pool
    checkout, a liveness ping and BEGIN/ROLLBACK, about six round trips that cost the API and PostgreSQL more
    CPU than a page's own statements; a campaign with stats, links and lists took six sessions. Not shared (a
    WebSocket's operations, which live for hours): a session per read, at most ``max_connections`` at once.
    """

    def __init__(
        self,
        db: Database,
        max_connections: int = MAX_CONNECTIONS_PER_REQUEST,
        exact_count_limit: int = DEFAULT_EXACT_LIMIT,
        *,
        shared: bool = False,
    ) -> None:
        self._db = db
        self._slots = asyncio.Semaphore(max_connections)
        self._shared = shared
        self._turn = asyncio.Lock()
        self._held: AsyncSession | None = None
        reads = self.session
        self.list_by_id: Batched[MailingList | None] = _loader(reads, lists.lists_by_ids)
        self.list_subscriber_count: DataLoader[int, int] = _loader(reads, lists.subscriber_counts, int)
        self.subscriber_by_id: DataLoader[int, Subscriber | None] = _loader(
            reads, subscribers.subscribers_by_ids
        )
        self.subscriptions_by_subscriber: Batched[list[Subscription]] = _loader(
            reads, subscribers.subscriptions_by_subscriber, list
        )
        self.template_by_id: DataLoader[int, Template | None] = _loader(reads, templates.templates_by_ids)
        self.campaign_by_id: DataLoader[int, Campaign | None] = _loader(reads, campaigns.campaigns_by_ids)
        self.campaign_list_ids: DataLoader[int, list[int]] = _loader(
            reads, campaigns.list_ids_by_campaign, list
        )
        self.segment_by_id: DataLoader[int, Segment | None] = _loader(reads, segments.segments_by_ids)
        self.segment_subscriber_count: DataLoader[int, int] = _loader(reads, segments.subscriber_counts, int)
        self.segment_ids_by_campaign: DataLoader[int, list[int]] = _loader(
            reads, segments.segment_ids_by_campaign, list
        )
        self.delivery_by_id: DataLoader[int, Delivery | None] = _loader(reads, per_parent.deliveries_by_ids)
        self.campaign_delivery_page: DataLoader[tuple[int, PageArgs], ChildPage[Delivery]] = _per_parent(
            reads, _delivery_pages
        )
        self.campaign_delivery_count: DataLoader[tuple[int, DeliveryStatus | None], Count] = _per_parent(
            reads, _delivery_counts(exact_count_limit)
        )
        self.subscriber_event_page: DataLoader[tuple[int, PageArgs], ChildPage[Event]] = _per_parent(
            reads, _event_pages
        )
        self.subscriber_event_count: DataLoader[tuple[int, None], Count] = _per_parent(
            reads, _event_counts(exact_count_limit)
        )
        self.campaign_timeline: DataLoader[tuple[int, TimelineArgs], list[TimelinePoint]] = _per_parent(
            reads, _timelines
        )
        self.flow_by_id: Batched[Flow | None] = _loader(reads, flows.flows_by_ids)
        self.flow_version_by_id: Batched[FlowVersion | None] = _loader(reads, reading.versions_by_ids)
        self.flow_run_by_id: Batched[FlowRun | None] = _loader(reads, reading.runs_by_ids)
        # Per flow: its steps' counters by step key (a step without any yet is missing).
        self.flow_step_stats: Batched[dict[str, FlowStepStats]] = _loader(reads, flows.step_stats, dict)
        self.flow_run_history: Batched[list[FlowStepRun]] = _loader(reads, flows.history_of_runs, list)
        self.flow_run_page: DataLoader[tuple[int, PageArgs], ChildPage[FlowRun]] = _per_parent(
            reads, _flow_run_pages
        )
        self.flow_run_count: DataLoader[tuple[int, FlowRunStatus | None], Count] = _per_parent(
            reads, _flow_run_counts(exact_count_limit)
        )
        self.subscriber_flow_run_page: DataLoader[tuple[int, PageArgs], ChildPage[FlowRun]] = _per_parent(
            reads, _subscriber_flow_run_pages
        )
        self.subscriber_flow_run_count: DataLoader[tuple[int, None], Count] = _per_parent(
            reads, _subscriber_flow_run_counts(exact_count_limit)
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for one read of this request; never held while waiting for another (so no deadlock)."""
        if not self._shared:
            async with self._slots, self._db.read_session() as session:
                yield session
            return
        async with self._turn:
            if self._held is None:
                self._held = self._db.read_sessionmaker()
            try:
                yield self._held
            except BaseException:
                # A failed statement aborts the transaction; the next read starts a fresh session.
                await self._drop()
                raise

    async def release(self) -> None:
        """End of the operation: close the shared session; any later read gets a session of its own."""
        self._shared = False
        async with self._turn:
            await self._drop()

    async def _drop(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.close()
