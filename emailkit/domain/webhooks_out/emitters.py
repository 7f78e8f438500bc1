"""One helper per family of events, for the single owner of each change to call in its own transaction.

Each builds the event's ``data`` (see ``events.EVENT_TYPES``) and its ordering key, and costs nothing beyond a
cache lookup when no endpoint of the workspace takes the type. Callers on hot paths (the send pipeline, the
feedback loop) pass plain facts in bulk; :func:`wanted` lets them skip building the facts at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.scope import current_scope
from emailkit.db.tables.audience import Import, Subscriber
from emailkit.db.tables.feedback import BounceType, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery
from emailkit.domain.webhooks_out.emit import Event, emit, emit_many, endpoints_for, subscriptions
from emailkit.domain.webhooks_out.events import gid, timestamp

CAMPAIGN_EVENTS: Final = {
    CampaignStatus.RUNNING: "campaign.started",
    CampaignStatus.PAUSED: "campaign.paused",
    CampaignStatus.FINISHED: "campaign.finished",
    CampaignStatus.FAILED: "campaign.failed",
}
FEEDBACK_EVENTS: Final = {
    EventType.BOUNCE: "delivery.bounced",
    EventType.COMPLAINT: "complaint",
    EventType.OPEN: "open",
    EventType.CLICK: "click",
}


def campaign_key(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


def subscriber_key(subscriber_id: int | None) -> str | None:
    return None if subscriber_id is None else f"subscriber:{subscriber_id}"


async def wanted(session: AsyncSession, workspace_id: int, type_name: str) -> bool:
    """Whether an enabled endpoint of the workspace takes `type_name` (from the cache, usually)."""
    return bool(await endpoints_for(session, workspace_id, type_name))


# -- campaigns (emailkit.domain.sending.lifecycle) ------------------------------------------------------------


def _campaign_data(campaign_id: int, row: Sequence[Any]) -> dict[str, Any]:
    name, status, reason, recipients, sent, failed = row
    return {
        "campaignId": gid("Campaign", campaign_id),
        "name": name,
        "status": str(status),
        "reason": reason,
        "recipientsCount": int(recipients),
        "sentCount": int(sent),
        "failedCount": int(failed),
    }


async def _workspace_of(session: AsyncSession, table: type[Campaign | Import], row_id: int) -> int | None:
    """The workspace in scope, or (code running for every workspace) the row's own."""
    scope = current_scope()
    if scope is not None and scope.workspace_id is not None:
        return scope.workspace_id
    found = await session.execute(select(table.workspace_id).where(table.id == row_id))
    value = found.scalar_one_or_none()
    return None if value is None else int(value)


async def campaign_changed(
    session: AsyncSession, campaign_id: int, type_name: str, *, workspace_id: int | None = None
) -> int:
    """``campaign.<started|paused|finished|failed>`` for a campaign whose status just changed in this
    transaction (its row is read as the transaction sees it, and only when someone listens)."""
    if workspace_id is None:
        workspace_id = await _workspace_of(session, Campaign, campaign_id)
        if workspace_id is None:
            return 0
    if not await wanted(session, workspace_id, type_name):
        return 0
    c = Campaign
    row = (
        await session.execute(
            select(c.name, c.status, c.status_reason, c.recipients_count, c.sent_count, c.failed_count).where(
                c.id == campaign_id
            )
        )
    ).one_or_none()
    if row is None:
        return 0
    return await emit(
        session,
        type_name,
        _campaign_data(campaign_id, tuple(row)),
        workspace_id=workspace_id,
        ordering_key=campaign_key(campaign_id),
    )


async def campaign_status(session: AsyncSession, campaign_id: int, status: CampaignStatus, **kw: Any) -> int:
    """The event of a campaign's new `status` (none for statuses without one: SCHEDULED, CANCELLED, DRAFT)."""
    type_name = CAMPAIGN_EVENTS.get(status)
    return 0 if type_name is None else await campaign_changed(session, campaign_id, type_name, **kw)


# -- deliveries (emailkit.domain.sending: the pipeline's ledger, transactional sends) ---------------------------


@dataclass(frozen=True, slots=True)
class DeliveryFact:
    workspace_id: int
    delivery_id: int
    campaign_id: int | None
    subscriber_id: int | None
    email: str
    provider_message_id: str | None = None
    error: str | None = None


def _delivery_data(f: DeliveryFact) -> dict[str, Any]:
    return {
        "deliveryId": gid("Delivery", f.delivery_id),
        "campaignId": gid("Campaign", f.campaign_id),
        "subscriberId": gid("Subscriber", f.subscriber_id),
        "email": f.email,
    }


async def deliveries_settled(
    session: AsyncSession,
    workspace_id: int,
    *,
    sent: Sequence[tuple[int, str | None]] = (),
    failed: Sequence[tuple[int, str]] = (),
) -> int:
    """``delivery.sent`` for `sent` ((delivery id, provider message id)) and ``delivery.failed`` for `failed`
    ((delivery id, error)), all of one workspace, reading the deliveries' campaign, subscriber and address in one
    statement, and only when an endpoint takes either type (otherwise no statement at all)."""
    want_sent = bool(sent) and await wanted(session, workspace_id, "delivery.sent")
    want_failed = bool(failed) and await wanted(session, workspace_id, "delivery.failed")
    if not (want_sent or want_failed):
        return 0
    ids = [i for i, _ in sent] if want_sent else []
    ids += [i for i, _ in failed] if want_failed else []
    d = Delivery
    found = {
        int(r[0]): r
        for r in await session.execute(
            select(d.id, d.campaign_id, d.subscriber_id, d.email).where(d.id.in_(ids))
        )
    }

    def fact(delivery_id: int, **extra: Any) -> DeliveryFact | None:
        row = found.get(delivery_id)
        return (
            None if row is None else DeliveryFact(workspace_id, delivery_id, row[1], row[2], row[3], **extra)
        )

    written = 0
    if want_sent:
        facts = [fact(i, provider_message_id=p) for i, p in sent]
        written += await deliveries_sent(session, [f for f in facts if f is not None])
    if want_failed:
        facts = [fact(i, error=e) for i, e in failed]
        written += await deliveries_failed(session, [f for f in facts if f is not None])
    return written


async def deliveries_sent(session: AsyncSession, facts: Iterable[DeliveryFact]) -> int:
    """``delivery.sent`` for each delivery handed to the provider."""
    return await emit_many(
        session,
        (
            Event(
                "delivery.sent",
                {**_delivery_data(f), "providerMessageId": f.provider_message_id},
                f.workspace_id,
                subscriber_key(f.subscriber_id),
            )
            for f in facts
        ),
    )


async def deliveries_failed(session: AsyncSession, facts: Iterable[DeliveryFact]) -> int:
    """``delivery.failed`` for each delivery that failed for good."""
    return await emit_many(
        session,
        (
            Event(
                "delivery.failed",
                {**_delivery_data(f), "error": f.error},
                f.workspace_id,
                subscriber_key(f.subscriber_id),
            )
            for f in facts
        ),
    )


# -- feedback (emailkit.domain.feedback.recording) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedbackFact:
    workspace_id: int
    type: EventType
    occurred_at: datetime
    delivery_id: int | None
    campaign_id: int | None
    subscriber_id: int | None
    email: str | None
    bounce_type: BounceType | None = None
    reason: str | None = None
    url: str | None = None


def _feedback_data(f: FeedbackFact) -> dict[str, Any]:
    data: dict[str, Any] = {
        "deliveryId": gid("Delivery", f.delivery_id),
        "campaignId": gid("Campaign", f.campaign_id),
        "subscriberId": gid("Subscriber", f.subscriber_id),
        "email": f.email,
        "occurredAt": timestamp(f.occurred_at),
    }
    if f.type is EventType.BOUNCE:
        data["bounceType"] = None if f.bounce_type is None else str(f.bounce_type)
        data["reason"] = f.reason
    elif f.type is EventType.CLICK:
        data["url"] = f.url
    return data


async def feedback_listened(session: AsyncSession, workspace_ids: Iterable[int]) -> bool:
    """Whether any of these workspaces has an endpoint for a feedback event: the tracking path asks first, and
    builds nothing for the webhooks when none does (the usual case, from the cache)."""
    for workspace_id in set(workspace_ids):
        by_type = await subscriptions.listeners(session, workspace_id)
        if any(by_type.get(name) for name in FEEDBACK_EVENTS.values()):
            return True
    return False


async def feedback_recorded(session: AsyncSession, facts: Iterable[FeedbackFact]) -> int:
    """``delivery.bounced``, ``complaint``, ``open`` and ``click`` for newly recorded feedback (other types,
    such as DELIVERED or DEFERRED, have no webhook event and are passed over)."""
    return await emit_many(
        session,
        (
            Event(
                FEEDBACK_EVENTS[f.type],
                _feedback_data(f),
                f.workspace_id,
                subscriber_key(f.subscriber_id),
                f.occurred_at,
            )
            for f in facts
            if f.type in FEEDBACK_EVENTS
        ),
    )


# -- subscribers (emailkit.domain.audience.subscribers, gdpr) --------------------------------------------------


def subscriber_data(row: Subscriber) -> dict[str, Any]:
    return {
        "subscriberId": gid("Subscriber", row.id),
        "email": row.email,
        "name": row.name,
        "status": str(row.status),
        "attributes": row.attributes or {},
    }


async def subscriber_created(session: AsyncSession, row: Subscriber) -> int:
    """``subscriber.created`` (the row flushed, so it has its id)."""
    return await emit(
        session,
        "subscriber.created",
        subscriber_data(row),
        workspace_id=row.workspace_id,
        ordering_key=subscriber_key(row.id),
    )


async def subscriber_updated(session: AsyncSession, row: Subscriber) -> int:
    """``subscriber.updated`` with the row as it is now (flushed)."""
    return await emit(
        session,
        "subscriber.updated",
        subscriber_data(row),
        workspace_id=row.workspace_id,
        ordering_key=subscriber_key(row.id),
    )


async def subscriber_unsubscribed(
    session: AsyncSession,
    *,
    workspace_id: int,
    subscriber_id: int,
    email: str,
    list_ids: Sequence[int] | None,
    source: str,
) -> int:
    """``subscriber.unsubscribed`` from `list_ids` (None: from everything)."""
    return await emit(
        session,
        "subscriber.unsubscribed",
        {
            "subscriberId": gid("Subscriber", subscriber_id),
            "email": email,
            "listIds": None if list_ids is None else [gid("MailingList", i) for i in list_ids],
            "source": source,
        },
        workspace_id=workspace_id,
        ordering_key=subscriber_key(subscriber_id),
    )


async def subscriber_erased(session: AsyncSession, *, workspace_id: int, subscriber_id: int) -> int:
    """``subscriber.erased``: only the id, since the person was erased."""
    return await emit(
        session,
        "subscriber.erased",
        {"subscriberId": gid("Subscriber", subscriber_id)},
        workspace_id=workspace_id,
        ordering_key=subscriber_key(subscriber_id),
    )


# -- imports (emailkit.domain.audience.imports) ----------------------------------------------------------------


async def import_finished(
    session: AsyncSession,
    import_id: int,
    status: str,
    counters: dict[str, int],
    error: str | None = None,
    *,
    workspace_id: int | None = None,
) -> int:
    """``import.finished`` for an import that ended (FINISHED or FAILED), in the transaction that ended it."""
    if workspace_id is None:
        workspace_id = await _workspace_of(session, Import, import_id)
        if workspace_id is None:
            return 0
    data: dict[str, Any] = {"importId": gid("Import", import_id), "status": str(status)}
    for name in ("total", "inserted", "updated", "skipped", "failed"):
        data[name] = int(counters.get(name, 0))
    data["error"] = error
    return await emit(session, "import.finished", data, workspace_id=workspace_id)


# -- automation flows (emailkit.domain.automation) -------------------------------------------------------------


async def flow_runs(
    session: AsyncSession, type_name: str, workspace_id: int, runs: Sequence[tuple[int, int, int | None]]
) -> int:
    """``flow.entered`` or ``flow.completed`` for each (flow, run, subscriber), in the transaction that made it."""
    return await emit_many(
        session,
        [
            Event(
                type_name,
                {
                    "flowId": gid("Flow", flow_id),
                    "runId": gid("FlowRun", run_id),
                    "subscriberId": gid("Subscriber", subscriber_id) if subscriber_id is not None else None,
                },
                workspace_id,
                subscriber_key(subscriber_id),
            )
            for flow_id, run_id, subscriber_id in runs
        ],
    )
