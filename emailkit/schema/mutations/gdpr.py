"""Mutation: eraseSubscriber, a data-subject erasure request."""

from __future__ import annotations

import strawberry

from emailkit.domain.audience import gdpr
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id


@strawberry.input
class EraseSubscriberInput:
    id: strawberry.ID


@strawberry.type
class EraseSubscriberPayload:
    erased_id: strawberry.ID | None = strawberry.field(description="The erased subscriber's ID.")
    user_errors: list[UserError]


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
