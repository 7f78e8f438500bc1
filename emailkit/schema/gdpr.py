"""Data-subject requests: export everything held about a subscriber, or erase them."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.domain.audience import gdpr
from emailkit.domain.errors import NotFound
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import CanWrite, write_mutation
from emailkit.schema.relay import decode_id, decode_id_or_none, to_global_id


@strawberry.input
class EraseSubscriberInput:
    id: strawberry.ID


@strawberry.type
class EraseSubscriberPayload:
    erased_id: strawberry.ID | None = strawberry.field(description="The erased subscriber's ID.")
    user_errors: list[UserError]


@strawberry.type
class Query:
    @strawberry.field(
        permission_classes=[CanWrite],
        description=(
            "Everything stored about a subscriber (GDPR access request) as one JSON document: profile, "
            "attributes, subscriptions, deliveries, events and suppression. Null when the subscriber does "
            "not exist. ADMIN or EDITOR keys."
        ),
    )
    async def export_subscriber_data(self, info: Info, id: strawberry.ID) -> JSON | None:
        pk = decode_id_or_none(id, "Subscriber")
        if pk is None:
            raise GraphQLError(f"Not a valid Subscriber ID: {id!r}", extensions={"code": "INVALID_ID"})
        try:
            async with info.context.loaders.session() as session:
                document = await gdpr.export_subscriber_data(session, pk, global_id=to_global_id)
        except NotFound:
            return None
        return JSON(document)


@strawberry.type
class Mutation:
    @write_mutation(
        description=(
            "Erase a subscriber's personal data (GDPR): the subscriber and their subscriptions are deleted, "
            "deliveries and events keep only what campaign totals need, and a hash of the address stays on "
            "the suppression list so it cannot be imported or created again unnoticed."
        )
    )
    async def erase_subscriber(self, info: Info, input: EraseSubscriberInput) -> EraseSubscriberPayload:
        out = await mutate(info, lambda s: gdpr.erase_subscriber(s, decode_id(input.id, "Subscriber")))
        return EraseSubscriberPayload(
            erased_id=input.id if out.value is not None else None, user_errors=out.errors
        )
