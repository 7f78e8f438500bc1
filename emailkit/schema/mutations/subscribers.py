"""Mutations on subscribers and their subscriptions: create, update, delete, subscribe to and unsubscribe
from lists (queueing the double opt-in confirmations they call for)."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from emailkit.db.tables.audience import Subscriber as SubscriberRow
from emailkit.domain.audience import optin, subscribers
from emailkit.domain.runtime import optin_sender
from emailkit.domain.sending.jobs import Jobs
from emailkit.schema.context import Info
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.errors import DeletePayload, UserError, mutate, mutate_then_enqueue
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id, decode_ids
from emailkit.schema.types.subscribers import SubscriberType


@strawberry.input
class CreateSubscriberInput:
    email: str
    name: str | None = None
    attributes: JSON | None = strawberry.field(
        default=None,
        description="A JSON object. Its timezone, if set, is an IANA name such as Europe/Paris "
        "(INVALID_TIMEZONE otherwise).",
    )
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
        default=None,
        description="Replaces all attributes; omit to keep them. Its timezone, if set, is an IANA name "
        "(INVALID_TIMEZONE otherwise).",
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


@strawberry.type
class Mutation:
    @write_mutation
    async def create_subscriber(self, info: Info, input: CreateSubscriberInput) -> SubscriberPayload:
        sender = optin_sender(info.context.runtime)

        async def work(s: AsyncSession) -> tuple[SubscriberRow, Jobs]:
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
            confirmations = await optin.queue_confirmations(s, sender, [row.id], list_ids)
            return row, Jobs(transactional_ids=confirmations)

        out = await mutate_then_enqueue(info, work)
        if out.value is None:
            return _payload(None, out.errors)
        # Confirmations the queue did not take are a QUEUE_UNAVAILABLE error; the ticker queues them later.
        return _payload(out.value.or_raise(), [])

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

        async def work(s: AsyncSession) -> tuple[list[SubscriberRow], Jobs]:
            subscriber_ids = decode_ids(input.subscriber_ids, "Subscriber", "subscriberIds")
            list_ids = decode_ids(input.list_ids, "MailingList", "listIds")
            rows = await subscribers.subscribe_to_lists(s, subscriber_ids, list_ids, status=input.status)
            confirmations = await optin.queue_confirmations(s, sender, subscriber_ids, list_ids)
            return rows, Jobs(transactional_ids=confirmations)

        out = await mutate_then_enqueue(info, work)
        if out.value is None:
            return _many(None, out.errors)
        return _many(out.value.or_raise(), [])

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
