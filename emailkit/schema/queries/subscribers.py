"""Queries: `subscribers` (plain filters or the typed segment filter) and `subscriber(id or email)`."""

from __future__ import annotations

from typing import cast

import strawberry
from graphql import GraphQLError

from emailkit.db.tables.audience import Subscription as SubscriptionRow
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.errors import DomainError
from emailkit.schema.context import Info
from emailkit.schema.enums import SubscriberStatus, SubscriptionStatus
from emailkit.schema.lookahead import selects
from emailkit.schema.relay import Connection, decode_id_or_none, query_id
from emailkit.schema.types.filters import SubscriberFilterInput, filter_to_domain, invalid_filter
from emailkit.schema.types.subscribers import SubscriberType


async def _with_relations(info: Info, page: Connection[SubscriberType]) -> Connection[SubscriberType]:
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


async def _filtered(
    info: Info, f: SubscriberFilterInput, first: int, after: str | None
) -> Connection[SubscriberType]:
    """`subscribers(filter:)`: a query has no userErrors, so a bad filter is a GraphQL error INVALID_FILTER."""
    try:
        raw = filter_to_domain(f)
        return await info.context.connection(
            lambda s, n, a: segments.find_subscribers(s, raw, first=n, after=a),
            SubscriberType.from_model,
            first,
            after,
        )
    except DomainError as exc:
        raise invalid_filter(exc) from None


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
            return await _with_relations(info, await _filtered(info, filter, first, after))
        list_pk = query_id(list_id, "MailingList") if list_id is not None else None
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
        return await _with_relations(info, page)

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
