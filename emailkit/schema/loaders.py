"""DataLoaders, one set per request, so every relation is fetched in one query per batch (no N+1)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from emailkit.domain import campaigns, lists, per_parent, segments, subscribers, templates
from emailkit.domain.child_pages import ChildPage
from emailkit.domain.counting import DEFAULT_EXACT_LIMIT, Count
from emailkit.domain.db import Database
from emailkit.domain.feedback.analytics import TimelineBucket, TimelinePoint
from emailkit.domain.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    MailingList,
    Subscriber,
    Subscription,
    Template,
)
from emailkit.domain.models_audience import Segment
from emailkit.domain.models_feedback import Event

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


def _loader(
    session_factory: SessionFactory,
    fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[Mapping[int, V]]],
    default: Callable[[], Any] = lambda: None,
) -> DataLoader[int, Any]:
    async def load(keys: list[int]) -> list[Any]:
        async with session_factory() as session:
            found = await fetch(session, keys)
        return [found.get(k, default()) for k in keys]

    return DataLoader(load_fn=load)


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


class Loaders:
    def __init__(
        self,
        db: Database,
        max_connections: int = MAX_CONNECTIONS_PER_REQUEST,
        exact_count_limit: int = DEFAULT_EXACT_LIMIT,
    ) -> None:
        self._db = db
        self._slots = asyncio.Semaphore(max_connections)
        reads = self.session
        self.list_by_id: DataLoader[int, MailingList | None] = _loader(reads, lists.lists_by_ids)
        self.list_subscriber_count: DataLoader[int, int] = _loader(reads, lists.subscriber_counts, int)
        self.subscriber_by_id: DataLoader[int, Subscriber | None] = _loader(
            reads, subscribers.subscribers_by_ids
        )
        self.subscriptions_by_subscriber: DataLoader[int, list[Subscription]] = _loader(
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

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for one read of this request; never held while waiting for another (so no deadlock)."""
        async with self._slots, self._db.session() as session:
            yield session
