"""DataLoaders, one set per request, so every relation is fetched in one query per batch (no N+1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from emailkit.domain import campaigns, lists, segments, subscribers, templates
from emailkit.domain.db import Database
from emailkit.domain.models import Campaign, MailingList, Subscriber, Subscription, Template
from emailkit.domain.models_audience import Segment

V = TypeVar("V")


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
