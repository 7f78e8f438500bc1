"""Subscribers and their subscriptions: types, queries and mutations."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import cast

import strawberry
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from emailkit.db.tables.audience import MailingList as ListRow
from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.db.tables.audience import Subscription as SubscriptionRow
from emailkit.domain.audience import optin, subscribers
from emailkit.domain.runtime import optin_sender
from emailkit.domain.sending import dispatch
from emailkit.schema.context import Info
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.events import EventNode, subscriber_events
from emailkit.schema.lists import MailingListType
from emailkit.schema.loaders import then
from emailkit.schema.lookahead import selects
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import (
    Connection,
    Node,
    decode_id,
    decode_id_or_none,
    decode_ids,
    parse_global_id,
    to_global_id,
)
from emailkit.schema.segments import SubscriberFilterInput, subscriber_connection


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


async def with_relations(info: Info, page: Connection[SubscriberType]) -> Connection[SubscriberType]:
    """Fetch the subscriptions (and their lists) that a page's nodes select, together and ahead."""
    if not selects(info, "edges", "node", "subscriptions"):
        return page
    loaders = info.context.loaders
    pks = [edge.node.pk for edge in page.edges]
    async with loaders.session() as session:
        await loaders.subscriptions_by_subscriber.fill(session, pks)
        if selects(info, "edges", "node", "subscriptions", "list"):
            held = loaders.subscriptions_by_subscriber
            list_ids = {
                row.list_id for pk in pks for row in cast("list[SubscriptionRow]", held.now_or_later(pk))
            }
            await loaders.list_by_id.fill(session, list_ids)
    return page


@strawberry.input
class CreateSubscriberInput:
    email: str
    name: str | None = None
    attributes: JSON | None = strawberry.field(default=None, description="A JSON object.")
    list_ids: list[strawberry.ID] | None = None
    status: SubscriberStatus | None = strawberry.field(default=None, description="Default ENABLED.")
    subscription_status: SubscriptionStatus | None = strawberry.field(
        default=None,
        description=(
            "Status of the new subscriptions; default UNCONFIRMED on DOUBLE opt-in lists, else CONFIRMED."
        ),
    )


@strawberry.input
class UpdateSubscriberInput:
    id: strawberry.ID
    email: str | None = None
    name: str | None = None
    attributes: JSON | None = strawberry.field(
        default=None, description="Replaces all attributes; omit to keep them."
    )
    status: SubscriberStatus | None = strawberry.field(
        default=None, description="BLOCKLISTED also unsubscribes from every list."
    )


@strawberry.input
class DeleteSubscriberInput:
    id: strawberry.ID


@strawberry.input
class SubscribeToListsInput:
    subscriber_ids: list[strawberry.ID]
    list_ids: list[strawberry.ID]
    status: SubscriptionStatus | None = strawberry.field(
        default=None,
        description=(
            "Set on every pair. Default: new or UNSUBSCRIBED subscriptions become UNCONFIRMED on DOUBLE "
            "opt-in lists and CONFIRMED on SINGLE ones; live subscriptions keep their status."
        ),
    )


@strawberry.input
class UnsubscribeFromListsInput:
    subscriber_ids: list[strawberry.ID]
    list_ids: list[strawberry.ID]


@strawberry.type
class SubscriberPayload:
    subscriber: SubscriberType | None
    user_errors: list[UserError]


@strawberry.type
class SubscribersPayload:
    subscribers: list[SubscriberType] = strawberry.field(description="The subscribers the call was about.")
    user_errors: list[UserError]


def _payload(row: SubscriberRow | None, errors: list[UserError]) -> SubscriberPayload:
    return SubscriberPayload(
        subscriber=SubscriberType.from_model(row) if row is not None else None, user_errors=errors
    )


def _many(rows: list[SubscriberRow] | None, errors: list[UserError]) -> SubscribersPayload:
    return SubscribersPayload(
        subscribers=[SubscriberType.from_model(r) for r in rows or []], user_errors=errors
    )


def _list_filter(value: strawberry.ID | None) -> int | None:
    if value is None:
        return None
    parsed = parse_global_id(value)
    if parsed is None or parsed[0] != "MailingList":
        raise GraphQLError(f"Not a valid MailingList ID: {value!r}", extensions={"code": "INVALID_ID"})
    return parsed[1]


@strawberry.type
class Query:
    @strawberry.field(
        description=(
            "Subscribers, oldest first. `search` matches email and name (case-insensitive); `listId` keeps "
            "subscribers of that list in any subscription state, narrowed by `subscriptionStatus`; `status` "
            "filters on the subscriber's own status. `filter` is the typed segment filter; it replaces the "
            "other filter arguments (an invalid one is a GraphQL error with code INVALID_FILTER)."
        )
    )
    async def subscribers(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        search: str | None = None,
        list_id: strawberry.ID | None = None,
        status: SubscriberStatus | None = None,
        subscription_status: SubscriptionStatus | None = None,
        filter: SubscriberFilterInput | None = None,
    ) -> Connection[SubscriberType]:
        if filter is not None:
            if any(arg is not None for arg in (search, list_id, status, subscription_status)):
                raise GraphQLError(
                    "Give either `filter` or search/listId/status/subscriptionStatus, not both",
                    extensions={"code": "INVALID_ARGUMENT"},
                )
            return await with_relations(
                info, await subscriber_connection(info, filter, first, after, SubscriberType.from_model)
            )
        list_pk = _list_filter(list_id)
        page = await info.context.connection(
            lambda s, n, a: subscribers.find_subscribers(
                s,
                first=n,
                after=a,
                search=search,
                list_id=list_pk,
                status=status,
                subscription_status=subscription_status,
            ),
            SubscriberType.from_model,
            first,
            after,
        )
        return await with_relations(info, page)

    @strawberry.field(description="One subscriber by global ID or by email address (give exactly one).")
    async def subscriber(
        self, info: Info, id: strawberry.ID | None = None, email: str | None = None
    ) -> SubscriberType | None:
        if (id is None) == (email is None):
            raise GraphQLError(
                "Give exactly one of `id` and `email`", extensions={"code": "INVALID_ARGUMENT"}
            )
        if id is not None:
            pk = decode_id_or_none(id, "Subscriber")
            row = await info.context.loaders.subscriber_by_id.load(pk) if pk is not None else None
        else:
            assert email is not None
            async with info.context.loaders.session() as session:
                row = await subscribers.get_by_email(session, email)
        return SubscriberType.from_model(row) if row is not None else None


@strawberry.type
class Mutation:
    @write_mutation
    async def create_subscriber(self, info: Info, input: CreateSubscriberInput) -> SubscriberPayload:
        sender = optin_sender(info.context.runtime)

        async def work(s: AsyncSession) -> tuple[SubscriberRow, list[int]]:
            list_ids = decode_ids(input.list_ids or [], "MailingList", "listIds")
            row = await subscribers.create_subscriber(
                s,
                input.email,
                name=input.name,
                attributes=input.attributes,
                list_ids=list_ids,
                status=input.status,
                subscription_status=input.subscription_status,
            )
            return row, await optin.queue_confirmations(s, sender, [row.id], list_ids)

        out = await mutate(info, work)
        if out.value is None:
            return _payload(None, out.errors)
        row, confirmations = out.value
        await dispatch.enqueue(info.context.runtime, dispatch.Jobs(transactional_ids=confirmations))
        return _payload(row, [])

    @write_mutation
    async def update_subscriber(self, info: Info, input: UpdateSubscriberInput) -> SubscriberPayload:
        out = await mutate(
            info,
            lambda s: subscribers.update_subscriber(
                s,
                decode_id(input.id, "Subscriber"),
                email=input.email,
                name=input.name,
                attributes=input.attributes,
                status=input.status,
            ),
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_subscriber(self, info: Info, input: DeleteSubscriberInput) -> DeletePayload:
        out = await mutate(
            info, lambda s: subscribers.delete_subscriber(s, decode_id(input.id, "Subscriber"))
        )
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)

    @write_mutation
    async def subscribe_to_lists(self, info: Info, input: SubscribeToListsInput) -> SubscribersPayload:
        sender = optin_sender(info.context.runtime)

        async def work(s: AsyncSession) -> tuple[list[SubscriberRow], list[int]]:
            subscriber_ids = decode_ids(input.subscriber_ids, "Subscriber", "subscriberIds")
            list_ids = decode_ids(input.list_ids, "MailingList", "listIds")
            rows = await subscribers.subscribe_to_lists(s, subscriber_ids, list_ids, status=input.status)
            return rows, await optin.queue_confirmations(s, sender, subscriber_ids, list_ids)

        out = await mutate(info, work)
        if out.value is None:
            return _many(None, out.errors)
        rows, confirmations = out.value
        await dispatch.enqueue(info.context.runtime, dispatch.Jobs(transactional_ids=confirmations))
        return _many(rows, [])

    @write_mutation
    async def unsubscribe_from_lists(
        self, info: Info, input: UnsubscribeFromListsInput
    ) -> SubscribersPayload:
        out = await mutate(
            info,
            lambda s: subscribers.unsubscribe_from_lists(
                s,
                decode_ids(input.subscriber_ids, "Subscriber", "subscriberIds"),
                decode_ids(input.list_ids, "MailingList", "listIds"),
            ),
        )
        return _many(out.value, out.errors)
