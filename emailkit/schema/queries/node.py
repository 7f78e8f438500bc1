"""`node(id)`: fetch any object by its global ID."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import strawberry

from emailkit.db.tables.audience import Import as ImportRow
from emailkit.domain.audience import suppressions
from emailkit.domain.feedback import analytics
from emailkit.schema.context import Info
from emailkit.schema.loaders import load_one
from emailkit.schema.relay import Node, parse_global_id
from emailkit.schema.types.abtests import variant_by_id
from emailkit.schema.types.campaigns import CampaignType
from emailkit.schema.types.deliveries import DeliveryType
from emailkit.schema.types.events import EventNode
from emailkit.schema.types.flows import FlowRunType, FlowType
from emailkit.schema.types.imports import ImportType
from emailkit.schema.types.lists import MailingListType
from emailkit.schema.types.segments import SegmentType
from emailkit.schema.types.subscribers import SubscriberType
from emailkit.schema.types.suppressions import SuppressionType
from emailkit.schema.types.templates import TemplateType


async def _list(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.list_by_id, pk, MailingListType.from_model)


async def _subscriber(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.subscriber_by_id, pk, SubscriberType.from_model)


async def _template(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.template_by_id, pk, TemplateType.from_model)


async def _campaign(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.campaign_by_id, pk, CampaignType.from_model)


async def _delivery(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.delivery_by_id, pk, DeliveryType.from_model)


async def _segment(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.segment_by_id, pk, SegmentType.from_model)


async def _event(info: Info, pk: int) -> Node | None:
    async with info.context.loaders.session() as session:
        row = (await analytics.events_by_ids(session, [pk])).get(pk)
    return EventNode.from_model(row) if row is not None else None


async def _suppression(info: Info, pk: int) -> Node | None:
    async with info.context.loaders.session() as session:
        row = (await suppressions.suppressions_by_ids(session, [pk])).get(pk)
    return SuppressionType.from_model(row) if row is not None else None


async def _flow(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.flow_by_id, pk, FlowType.from_model)


async def _flow_run(info: Info, pk: int) -> Node | None:
    return await load_one(info.context.loaders.flow_run_by_id, pk, FlowRunType.from_model)


async def _import(info: Info, pk: int) -> Node | None:
    async with info.context.loaders.session() as session:
        row = await session.get(ImportRow, pk)
    return ImportType.from_model(row) if row is not None else None


RESOLVERS: dict[str, Callable[[Info, int], Awaitable[Node | None]]] = {
    "MailingList": _list,
    "Subscriber": _subscriber,
    "Template": _template,
    "Campaign": _campaign,
    "Delivery": _delivery,
    "Segment": _segment,
    "Event": _event,
    "Suppression": _suppression,
    "Import": _import,
    "CampaignVariant": variant_by_id,
    "Flow": _flow,
    "FlowRun": _flow_run,
}


@strawberry.type
class Query:
    @strawberry.field(description="Any object by its global ID; null when it does not exist.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        parsed = parse_global_id(id)
        if parsed is None or parsed[0] not in RESOLVERS:
            return None
        return await RESOLVERS[parsed[0]](info, parsed[1])
