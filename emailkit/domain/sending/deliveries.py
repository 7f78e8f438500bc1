"""Reading the deliveries ledger, retrying failures, and queueing transactional messages."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import Subscriber, SubscriberStatus
from emailkit.db.tables.content import Template, TemplateKind
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.audience.suppressions import is_suppressed
from emailkit.domain.content.rendering import compile_content, subscriber_vars, template_context
from emailkit.domain.errors import DomainError, ErrorCode, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.senders.store import require_sender
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.validation import normalize_email

MAX_TRANSACTIONAL_DATA = 64 * 1024
RESERVED_KEYS = frozenset({"subscriber", "campaign", "unsubscribe_url"})


async def find_deliveries(
    session: AsyncSession,
    *,
    campaign_id: int,
    first: int,
    after: int | None,
    status: DeliveryStatus | None = None,
) -> Page[Delivery]:
    stmt = select(Delivery).where(Delivery.campaign_id == campaign_id)
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    return await keyset_page(session, stmt, Delivery.id, first=first, after=after)


async def retry_failed_deliveries(
    session: AsyncSession, campaign_id: int, *, include_in_doubt: bool = False
) -> tuple[Campaign, list[int], int]:
    """Queue every FAILED delivery of a campaign again; returns the campaign, batches to enqueue, and the count.

    With ``include_in_doubt``, IN_DOUBT deliveries are queued too: the operator accepts that those of them
    that did go out before their worker died will arrive twice.

    A FINISHED campaign (or one that FAILED because every attempt failed) goes back to RUNNING until the retried
    recipients are done; a PAUSED one stays paused (resume sends them along with the rest).
    """
    campaign = await lifecycle.lock_for_retry(session, campaign_id)
    wanted = [DeliveryStatus.FAILED, DeliveryStatus.IN_DOUBT] if include_in_doubt else [DeliveryStatus.FAILED]
    counts = dict(
        (
            await session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.campaign_id == campaign_id, Delivery.status.in_(wanted))
                .group_by(Delivery.status)
            )
        ).all()
    )
    failed_count = int(counts.get(DeliveryStatus.FAILED, 0))
    in_doubt_count = int(counts.get(DeliveryStatus.IN_DOUBT, 0))
    count = failed_count + in_doubt_count
    if count == 0:
        return campaign, [], 0
    await session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status.in_(wanted))
        .values(status=DeliveryStatus.QUEUED, attempts=0, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    # Reopen exactly the batches that now hold queued recipients.
    has_queued = exists().where(
        Delivery.campaign_id == campaign_id,
        Delivery.status == DeliveryStatus.QUEUED,
        Delivery.subscriber_id.between(CampaignBatch.lo_id, CampaignBatch.hi_id),
    )
    await session.execute(
        update(CampaignBatch)
        .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.status == BatchStatus.DONE, has_queued)
        .values(status=BatchStatus.PENDING, lease_until=None, enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    campaign.failed_count = max(0, campaign.failed_count - failed_count)
    campaign.in_doubt_count = max(0, campaign.in_doubt_count - in_doubt_count)
    lifecycle.reopen_for_retry(campaign, failed=failed_count, in_doubt=in_doubt_count)
    await session.flush()
    batch_ids = (
        await lifecycle.pending_batch_ids(session, campaign_id)
        if campaign.status is CampaignStatus.RUNNING
        else []
    )
    return campaign, batch_ids, count


async def retry_failed_deliveries_with_jobs(
    session: AsyncSession, campaign_id: int, *, include_in_doubt: bool = False
) -> tuple[tuple[Campaign, int], Jobs]:
    """`retry_failed_deliveries` for ``dispatch.commit_then_enqueue``: the campaign and the count, and the
    batches to run as the jobs."""
    campaign, batch_ids, count = await retry_failed_deliveries(
        session, campaign_id, include_in_doubt=include_in_doubt
    )
    return (campaign, count), Jobs(batch_ids=batch_ids)


async def create_transactional(
    session: AsyncSession,
    *,
    template_id: int,
    to: str,
    data: dict[str, Any] | None,
    from_email: str | None,
    from_name: str = "",
    sender_id: int | None = None,
) -> tuple[Delivery, Jobs]:
    """Validate and record one transactional message; returns it, and itself as the job to enqueue after commit
    (``dispatch.commit_then_enqueue``)."""
    email = normalize_email(to, "to")
    if not from_email:
        raise DomainError.single(
            ErrorCode.REQUIRED, "fromEmail is required (or configure EMAILKIT_FROM_EMAIL)", "fromEmail"
        )
    sender = normalize_email(from_email, "fromEmail")
    if sender_id is not None:
        await require_sender(session, sender_id)
    template = await session.get(Template, template_id)
    if template is None:
        raise NotFound("Template", field="templateId", code=ErrorCode.TEMPLATE_NOT_FOUND)
    if template.kind is not TemplateKind.TRANSACTIONAL:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, "sendTransactional needs a TRANSACTIONAL template", "templateId"
        )
    data = dict(data or {})
    reserved = sorted(RESERVED_KEYS & data.keys())
    if reserved:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT, f"data may not define {', '.join(reserved)} (set by emailkit)", "data"
        )
    if len(repr(data)) > MAX_TRANSACTIONAL_DATA:
        raise DomainError.single(ErrorCode.TOO_LONG, "data is larger than 64 KiB", "data")
    subscriber = (
        await session.execute(select(Subscriber).where(Subscriber.email == email))
    ).scalar_one_or_none()
    if subscriber is not None and subscriber.status is SubscriberStatus.BLOCKLISTED:
        raise DomainError.single(ErrorCode.SUPPRESSED, f"{email} is blocklisted", "to")
    if await is_suppressed(session, email):
        raise DomainError.single(ErrorCode.SUPPRESSED, f"{email} is on the suppression list", "to")
    # Render once now so a template that cannot render with this data fails here, not silently in a worker;
    # off the event loop, since a render may run up to its time limit.
    context = render_context(subscriber, email, data)
    body, fmt, subject = template.body, template.format, template.subject
    await asyncio.to_thread(lambda: compile_content(body, fmt, subject=subject).render(context))
    row = Delivery(
        campaign_id=None,
        subscriber_id=subscriber.id if subscriber is not None else None,
        email=email,
        template_id=template.id,
        data={"vars": data, "from_email": sender, "from_name": from_name},
        status=DeliveryStatus.QUEUED,
        sender_id=sender_id,
    )
    session.add(row)
    await session.flush()
    return row, Jobs(transactional_ids=[row.id])


def render_context(subscriber: Subscriber | None, email: str, data: dict[str, Any]) -> dict[str, Any]:
    sub = (
        subscriber_vars(subscriber)
        if subscriber is not None
        else {"id": None, "email": email, "name": "", "attributes": {}, "status": "ENABLED"}
    )
    return template_context(subscriber=sub, **data)
