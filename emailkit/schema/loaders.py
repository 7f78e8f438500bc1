"""DataLoaders, one set per request, so every relation is fetched in one query per batch (no N+1)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from emailkit.domain import campaigns, lists, per_parent, segments, subscribers, templates
from emailkit.domain.child_pages import ChildPage
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
    db: Database,
    fetch: Callable[[AsyncSession, Sequence[int]], Awaitable[Mapping[int, V]]],
    default: Callable[[], Any] = lambda: None,
) -> DataLoader[int, Any]:
    async def load(keys: list[int]) -> list[Any]:
        async with db.session() as session:
            found = await fetch(session, keys)
        return [found.get(k, default()) for k in keys]

    return DataLoader(load_fn=load)


def _per_parent(
    db: Database, fetch: Callable[[AsyncSession, list[int], A], Awaitable[Mapping[int, V]]]
) -> DataLoader[tuple[int, A], V]:
    """A loader keyed by (parent id, arguments): one statement per distinct arguments in a batch."""

    async def load(keys: list[tuple[int, A]]) -> list[V]:
        parents: dict[A, list[int]] = defaultdict(list)
        for parent, args in keys:
            parents[args].append(parent)
        found: dict[tuple[int, A], V] = {}
        async with db.session() as session:
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


async def _delivery_counts(
    session: AsyncSession, ids: list[int], status: DeliveryStatus | None
) -> Mapping[int, int]:
    return await per_parent.delivery_counts(session, ids, status)


async def _event_pages(
    session: AsyncSession, ids: list[int], args: PageArgs
) -> Mapping[int, ChildPage[Event]]:
    return await per_parent.event_pages(session, ids, first=args.first, after=args.after)


async def _event_counts(session: AsyncSession, ids: list[int], _: None) -> Mapping[int, int]:
    return await per_parent.event_counts(session, ids)


async def _timelines(
    session: AsyncSession, ids: list[int], args: TimelineArgs
) -> Mapping[int, list[TimelinePoint]]:
    return await per_parent.timelines(session, ids, args.bucket, since=args.since, until=args.until)


class Loaders:
    def __init__(self, db: Database) -> None:
        self.list_by_id: DataLoader[int, MailingList | None] = _loader(db, lists.lists_by_ids)
        self.list_subscriber_count: DataLoader[int, int] = _loader(db, lists.subscriber_counts, int)
        self.subscriber_by_id: DataLoader[int, Subscriber | None] = _loader(
            db, subscribers.subscribers_by_ids
        )
        self.subscriptions_by_subscriber: DataLoader[int, list[Subscription]] = _loader(
            db, subscribers.subscriptions_by_subscriber, list
        )
        self.template_by_id: DataLoader[int, Template | None] = _loader(db, templates.templates_by_ids)
        self.campaign_by_id: DataLoader[int, Campaign | None] = _loader(db, campaigns.campaigns_by_ids)
        self.campaign_list_ids: DataLoader[int, list[int]] = _loader(db, campaigns.list_ids_by_campaign, list)
        self.segment_by_id: DataLoader[int, Segment | None] = _loader(db, segments.segments_by_ids)
        self.segment_subscriber_count: DataLoader[int, int] = _loader(db, segments.subscriber_counts, int)
        self.segment_ids_by_campaign: DataLoader[int, list[int]] = _loader(
            db, segments.segment_ids_by_campaign, list
        )
        self.delivery_by_id: DataLoader[int, Delivery | None] = _loader(db, per_parent.deliveries_by_ids)
        self.campaign_delivery_page: DataLoader[tuple[int, PageArgs], ChildPage[Delivery]] = _per_parent(
            db, _delivery_pages
        )
        self.campaign_delivery_count: DataLoader[tuple[int, DeliveryStatus | None], int] = _per_parent(
            db, _delivery_counts
        )
        self.subscriber_event_page: DataLoader[tuple[int, PageArgs], ChildPage[Event]] = _per_parent(
            db, _event_pages
        )
        self.subscriber_event_count: DataLoader[tuple[int, None], int] = _per_parent(db, _event_counts)
        self.campaign_timeline: DataLoader[tuple[int, TimelineArgs], list[TimelinePoint]] = _per_parent(
            db, _timelines
        )
