"""The Subscriber type and its ListSubscription memberships."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.audience import MailingList as ListRow
from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.db.tables.audience import Subscription as SubscriptionRow
from emailkit.schema.context import Info
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.loaders import then
from emailkit.schema.relay import Connection, Node, to_global_id
from emailkit.schema.types.events import EventNode, subscriber_events
from emailkit.schema.types.lazy import resolved
from emailkit.schema.types.lists import MailingListType

if TYPE_CHECKING:
    from emailkit.schema.types.flows import FlowRunType

# Lazy: the flows module imports this one (FlowRun.subscriber).
FlowRunRef = Annotated["FlowRunType", strawberry.lazy("emailkit.schema.types.flows")]


def _list_type(row: ListRow | None) -> MailingListType:
    if row is None:
        # Only when the list is deleted between the two batched reads of this request.
        raise GraphQLError("The list was deleted", extensions={"code": "NOT_FOUND"})
    return MailingListType.from_model(row)


@strawberry.type(name="ListSubscription", description="A subscriber's membership of one list.")
class SubscriptionType:
    list_pk: strawberry.Private[int]
    status: SubscriptionStatus
    created_at: datetime
    updated_at: datetime

    @strawberry.field(name="list", graphql_type=MailingListType)
    def mailing_list(self, info: Info) -> MailingListType | Awaitable[MailingListType]:
        # One object per list for the whole response: a page of 50 subscribers names the same few lists ~100 times.
        made: dict[int, MailingListType] = info.context.extra.setdefault("list_types", {})
        pk = self.list_pk
        if pk in made:
            return made[pk]
        return then(
            info.context.loaders.list_by_id.now_or_later(pk), lambda row: made.setdefault(pk, _list_type(row))
        )

    @classmethod
    def from_model(cls, row: SubscriptionRow) -> SubscriptionType:
        return cls(
            list_pk=row.list_id, status=row.status, created_at=row.created_at, updated_at=row.updated_at
        )


@strawberry.type(name="Subscriber")
class SubscriberType(Node):
    pk: strawberry.Private[int]
    email: str
    name: str
    attributes: JSON = strawberry.field(description="Free-form JSON object, available to templates.")
    status: SubscriberStatus
    created_at: datetime
    updated_at: datetime

    events: Connection[EventNode] = strawberry.field(resolver=subscriber_events)

    @strawberry.field(description="The person's runs through flows, newest first.")
    async def flow_runs(
        self, info: Info, first: int = 50, after: str | None = None
    ) -> Connection[FlowRunRef]:
        loaders = info.context.loaders
        return await info.context.child_connection(
            loaders.subscriber_flow_run_page,
            loaders.subscriber_flow_run_count,
            self.pk,
            resolved(FlowRunRef).from_model,
            first,
            after,
        )

    @strawberry.field(
        description="Subscriptions in every state, including UNSUBSCRIBED, by list id.",
        graphql_type=list[SubscriptionType],
    )
    def subscriptions(self, info: Info) -> list[SubscriptionType] | Awaitable[list[SubscriptionType]]:
        return then(
            info.context.loaders.subscriptions_by_subscriber.now_or_later(self.pk), _subscription_types
        )

    @classmethod
    def from_model(cls, row: SubscriberRow) -> SubscriberType:
        return cls(
            id=to_global_id("Subscriber", row.id),
            pk=row.id,
            email=row.email,
            name=row.name,
            attributes=JSON(dict(row.attributes)),
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _subscription_types(rows: list[SubscriptionRow]) -> list[SubscriptionType]:
    return [SubscriptionType.from_model(r) for r in rows]
