"""Sending: campaign lifecycle mutations, the deliveries ledger, live progress, test and transactional sends."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON

from emailkit.db.tables.sending import FINAL_CAMPAIGN_STATUSES, DeliveryStatus
from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.db.tables.sending import Delivery as DeliveryRow
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.ports.queue import QueueUnavailable
from emailkit.domain.runtime import campaign_sender
from emailkit.domain.sending import deliveries, dispatch, lifecycle, progress
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.validation import normalize_email
from emailkit.schema.context import Info
from emailkit.schema.enums import CampaignStatus
from emailkit.schema.errors import MutationWarning, Outcome, UserError, mutate, to_user_errors
from emailkit.schema.live import live_updates
from emailkit.schema.permissions import write_mutation
from emailkit.schema.refs import campaign_by_pk, subscriber_by_pk
from emailkit.schema.relay import Connection, Node, decode_id, decode_id_or_none, to_global_id

if TYPE_CHECKING:
    from emailkit.schema.campaigns import CampaignType
    from emailkit.schema.subscribers import SubscriberType

strawberry.enum(DeliveryStatus, name="DeliveryStatus")

log = logging.getLogger(__name__)

CampaignRef = Annotated["CampaignType", strawberry.lazy("emailkit.schema.campaigns")]
SubscriberRef = Annotated["SubscriberType", strawberry.lazy("emailkit.schema.subscribers")]
MAX_TEST_RECIPIENTS = 10


@strawberry.type(name="Delivery", description="One recipient of one campaign or transactional message.")
class DeliveryType(Node):
    pk: strawberry.Private[int]
    campaign_pk: strawberry.Private[int | None]
    subscriber_pk: strawberry.Private[int | None]
    email: str
    status: DeliveryStatus
    skip_reason: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    last_error: str | None = strawberry.field(description="The provider's error for the last failed attempt.")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None

    @strawberry.field
    async def campaign(self, info: Info) -> CampaignRef | None:
        return await campaign_by_pk(info, self.campaign_pk)

    @strawberry.field(description="The recipient; null for a transactional message or once erased.")
    async def subscriber(self, info: Info) -> SubscriberRef | None:
        return await subscriber_by_pk(info, self.subscriber_pk)

    @classmethod
    def from_model(cls, row: DeliveryRow) -> DeliveryType:
        return cls(
            id=to_global_id("Delivery", row.id),
            pk=row.id,
            campaign_pk=row.campaign_id,
            subscriber_pk=row.subscriber_id,
            email=row.email,
            status=row.status,
            skip_reason=row.skip_reason,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
        )


@strawberry.type
class CampaignProgress:
    status: CampaignStatus
    status_reason: str | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    in_doubt: int = strawberry.field(
        description="Recipients whose worker died while handing them over: they may or may not have received "
        "the message. Not counted as sent, never sent again unless retried with includeInDoubt."
    )
    rate_per_second: float = strawberry.field(description="Recipients processed per second, recently.")
    eta_seconds: float | None = strawberry.field(
        description="Estimated seconds to completion; null if unknown."
    )


def progress_of(campaign: CampaignRow, estimate: progress.Estimate | None = None) -> CampaignProgress:
    return CampaignProgress(
        status=campaign.status,
        status_reason=campaign.status_reason,
        recipients=campaign.recipients_count,
        sent=campaign.sent_count,
        failed=campaign.failed_count,
        skipped=campaign.skipped_count,
        in_doubt=campaign.in_doubt_count,
        rate_per_second=estimate.rate_per_second if estimate else 0.0,
        eta_seconds=estimate.eta_seconds if estimate else None,
    )


async def campaign_deliveries(
    root: CampaignRef,
    info: Info,
    first: int = 50,
    after: str | None = None,
    status: DeliveryStatus | None = None,
) -> Connection[DeliveryType]:
    """The ledger of this campaign: one row per recipient, with the provider's error for failures."""
    loaders = info.context.loaders
    return await info.context.child_connection(
        loaders.campaign_delivery_page,
        loaders.campaign_delivery_count,
        root.pk,
        DeliveryType.from_model,
        first,
        after,
        status,
    )


async def campaign_progress_field(root: CampaignRef, info: Info) -> CampaignProgress:
    row = await info.context.loaders.campaign_by_id.load(root.pk)
    if row is None:
        raise GraphQLError("Campaign not found", extensions={"code": "NOT_FOUND"})
    return progress_of(row)


@strawberry.input
class CampaignIdInput:
    id: strawberry.ID


@strawberry.input
class ScheduleCampaignInput:
    id: strawberry.ID
    send_at: datetime = strawberry.field(description="When to start; an ISO 8601 time with an offset.")


@strawberry.input
class RetryFailedDeliveriesInput:
    campaign_id: strawberry.ID
    include_in_doubt: bool = strawberry.field(
        default=False,
        description="Queue the IN_DOUBT deliveries too. Some of them did reach their recipient, who then "
        "gets the message twice.",
    )


@strawberry.input
class SendTestEmailInput:
    campaign_id: strawberry.ID
    emails: list[str]
    subscriber_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Personalise every test message with this subscriber's data. Default: the data of "
        "the subscriber with that address, else of a sample subscriber named Sam Sample.",
    )


@strawberry.input
class SendTransactionalInput:
    template_id: strawberry.ID
    to: str
    data: JSON | None = None
    from_email: str | None = strawberry.field(default=None, description="Default: EMAILKIT_FROM_EMAIL.")
    from_name: str | None = None


@strawberry.type
class CampaignLifecyclePayload:
    campaign: CampaignRef | None
    user_errors: list[UserError]
    warnings: list[MutationWarning] = strawberry.field(
        default_factory=list,
        description="The change was made, but something about it is not yet done (e.g. QUEUE_UNAVAILABLE).",
    )


@strawberry.type
class RetryFailedDeliveriesPayload:
    campaign: CampaignRef | None
    retried: int
    user_errors: list[UserError]
    warnings: list[MutationWarning] = strawberry.field(
        default_factory=list,
        description="The change was made, but something about it is not yet done (e.g. QUEUE_UNAVAILABLE).",
    )


@strawberry.type
class TestEmailResult:
    email: str
    ok: bool
    error: str | None


@strawberry.type
class SendTestEmailPayload:
    results: list[TestEmailResult]
    user_errors: list[UserError]


@strawberry.type
class SendTransactionalPayload:
    delivery: DeliveryType | None
    user_errors: list[UserError]


def _campaign_payload(row: CampaignRow | None, errors: list[UserError]) -> CampaignLifecyclePayload:
    from emailkit.schema.campaigns import CampaignType

    return CampaignLifecyclePayload(
        campaign=CampaignType.from_model(row) if row is not None else None, user_errors=errors
    )


async def _running_payload(
    info: Info, out: Outcome[tuple[CampaignRow, list[int]]]
) -> CampaignLifecyclePayload:
    """After a start or resume committed: queue the batches it planned, then answer."""
    if out.value is None:
        return _campaign_payload(None, out.errors)
    campaign, batch_ids = out.value
    payload = _campaign_payload(campaign, [])
    payload.warnings = await _queue_batches(info, batch_ids)
    return payload


async def _queue_batches(info: Info, batch_ids: list[int]) -> list[MutationWarning]:
    """Queue batches whose campaign is already committed RUNNING. With the queue unreachable the campaign
    stays RUNNING and the upkeep ticker re-enqueues its batches once the queue is back; say so."""
    runtime = info.context.runtime
    try:
        await dispatch.enqueue(runtime, dispatch.Jobs(batch_ids=batch_ids))
    except QueueUnavailable as exc:
        log.warning("batches %s not queued: %s; the ticker will re-enqueue them", batch_ids, exc)
        setup = runtime.sending
        after = (setup.config if setup is not None else SendingConfig()).requeue_after_seconds
        return [
            MutationWarning(
                code=ErrorCode.QUEUE_UNAVAILABLE,
                message=(
                    f"The campaign is {CampaignStatus.RUNNING.value}, but the job queue is unreachable, so "
                    "its sending is not queued yet. The workers queue it again automatically once the queue "
                    f"is back (any batch left unqueued for {after:g} s is queued again)."
                ),
            )
        ]
    return []


def _batch_size(info: Info) -> int:
    setup = info.context.runtime.sending
    return (setup.config if setup is not None else SendingConfig()).batch_size


@strawberry.type
class Query:
    @strawberry.field(description="A delivery (campaign recipient or transactional message) by ID.")
    async def delivery(self, info: Info, id: strawberry.ID) -> DeliveryType | None:
        pk = decode_id_or_none(id, "Delivery")
        row = await info.context.loaders.delivery_by_id.load(pk) if pk is not None else None
        return DeliveryType.from_model(row) if row is not None else None


@strawberry.type
class Mutation:
    @write_mutation(description="DRAFT or SCHEDULED → RUNNING: snapshot the audience and start sending.")
    async def start_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(
            info,
            lambda s: lifecycle.start_campaign(
                s, decode_id(input.id, "Campaign"), batch_size=_batch_size(info)
            ),
        )
        return await _running_payload(info, out)

    @write_mutation(description="RUNNING → PAUSED: workers stop after their current chunk.")
    async def pause_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(info, lambda s: lifecycle.pause_campaign(s, decode_id(input.id, "Campaign")))
        return _campaign_payload(out.value, out.errors)

    @write_mutation(description="PAUSED → RUNNING: continue where the campaign stopped.")
    async def resume_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(info, lambda s: lifecycle.resume_campaign(s, decode_id(input.id, "Campaign")))
        return await _running_payload(info, out)

    @write_mutation(description="Stop for good; recipients not yet sent to are never sent to.")
    async def cancel_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(info, lambda s: lifecycle.cancel_campaign(s, decode_id(input.id, "Campaign")))
        return _campaign_payload(out.value, out.errors)

    @write_mutation(description="Start automatically at sendAt (within a few seconds).")
    async def schedule_campaign(self, info: Info, input: ScheduleCampaignInput) -> CampaignLifecyclePayload:
        out = await mutate(
            info, lambda s: lifecycle.schedule_campaign(s, decode_id(input.id, "Campaign"), input.send_at)
        )
        return _campaign_payload(out.value, out.errors)

    @write_mutation(
        description="Queue every FAILED delivery of the campaign again (and the IN_DOUBT ones if asked)."
    )
    async def retry_failed_deliveries(
        self, info: Info, input: RetryFailedDeliveriesInput
    ) -> RetryFailedDeliveriesPayload:
        from emailkit.schema.campaigns import CampaignType

        out = await mutate(
            info,
            lambda s: deliveries.retry_failed_deliveries(
                s,
                decode_id(input.campaign_id, "Campaign", "campaignId"),
                include_in_doubt=input.include_in_doubt,
            ),
        )
        if out.value is None:
            return RetryFailedDeliveriesPayload(campaign=None, retried=0, user_errors=out.errors)
        campaign, batch_ids, count = out.value
        return RetryFailedDeliveriesPayload(
            campaign=CampaignType.from_model(campaign),
            retried=count,
            user_errors=[],
            warnings=await _queue_batches(info, batch_ids),
        )

    @write_mutation(
        description="Send the campaign now to up to 10 addresses, marked [Test], without tracking."
    )
    async def send_test_email(self, info: Info, input: SendTestEmailInput) -> SendTestEmailPayload:
        try:
            campaign_id = decode_id(input.campaign_id, "Campaign", "campaignId")
            if not input.emails or len(input.emails) > MAX_TEST_RECIPIENTS:
                raise DomainError.single(
                    ErrorCode.INVALID_INPUT, f"Give 1 to {MAX_TEST_RECIPIENTS} addresses", "emails"
                )
            emails = [normalize_email(e, "emails") for e in input.emails]
            if info.context.runtime.sending is None:
                raise DomainError.single(ErrorCode.SEND_FAILED, "Sending is not configured in this process")
            as_subscriber = (
                decode_id(input.subscriber_id, "Subscriber", "subscriberId")
                if input.subscriber_id is not None
                else None
            )
            results = await campaign_sender(info.context.runtime).send_test(
                campaign_id, emails, as_subscriber=as_subscriber
            )
        except DomainError as exc:
            return SendTestEmailPayload(results=[], user_errors=to_user_errors(exc))
        return SendTestEmailPayload(
            results=[
                TestEmailResult(email=e, ok=r.ok, error=r.error) for e, r in zip(emails, results, strict=True)
            ],
            user_errors=[],
        )

    @write_mutation(description="Render a TRANSACTIONAL template with `data` and send it through the queue.")
    async def send_transactional(self, info: Info, input: SendTransactionalInput) -> SendTransactionalPayload:
        setup = info.context.runtime.sending
        default_from = setup.default_from if setup is not None else (None, "")
        out = await mutate(
            info,
            lambda s: deliveries.create_transactional(
                s,
                template_id=decode_id(input.template_id, "Template", "templateId"),
                to=input.to,
                data=_data_object(input.data),
                from_email=input.from_email or default_from[0],
                from_name=input.from_name if input.from_name is not None else default_from[1],
            ),
        )
        if out.value is None:
            return SendTransactionalPayload(delivery=None, user_errors=out.errors)
        await dispatch.enqueue(info.context.runtime, dispatch.Jobs(transactional_ids=[out.value.id]))
        return SendTransactionalPayload(delivery=DeliveryType.from_model(out.value), user_errors=[])


def _data_object(value: object) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DomainError.single(ErrorCode.INVALID_INPUT, "data must be a JSON object", "data")
    return value


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Live counters of a campaign until it reaches a final state.")
    async def campaign_progress(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[CampaignProgress, None]:
        pk = decode_id_or_none(id, "Campaign")
        runtime = info.context.runtime
        if pk is None:
            raise GraphQLError("Not a Campaign ID", extensions={"code": "INVALID_ID"})
        estimator = progress.RateEstimator()
        # Subscribe before reading the current state so no update between the two is missed.
        async with live_updates(runtime, progress.progress_channel(pk)) as updates:
            async with runtime.db.session() as s:
                row = await s.get(CampaignRow, pk)
            if row is None:
                raise GraphQLError("Campaign not found", extensions={"code": "NOT_FOUND"})
            yield _estimated(progress_of(row), estimator, progress.snapshot(row))
            if row.status in FINAL_CAMPAIGN_STATUSES:
                return
            async for message in updates:
                current = _from_message(message)
                yield _estimated(current, estimator, message)
                if current.status in FINAL_CAMPAIGN_STATUSES:
                    return


def _from_message(message: dict[str, object]) -> CampaignProgress:
    return CampaignProgress(
        status=CampaignStatus(str(message["status"])),
        status_reason=message.get("statusReason") if isinstance(message.get("statusReason"), str) else None,  # type: ignore[arg-type]
        recipients=int(message["recipients"]),  # type: ignore[call-overload]
        sent=int(message["sent"]),  # type: ignore[call-overload]
        failed=int(message["failed"]),  # type: ignore[call-overload]
        skipped=int(message["skipped"]),  # type: ignore[call-overload]
        in_doubt=int(message.get("inDoubt", 0)),  # type: ignore[call-overload]
        rate_per_second=0.0,
        eta_seconds=None,
    )


def _estimated(
    p: CampaignProgress, estimator: progress.RateEstimator, message: dict[str, object]
) -> CampaignProgress:
    processed = p.sent + p.failed + p.skipped + p.in_doubt
    at = message.get("at")
    estimate = estimator.add(
        float(at) if isinstance(at, int | float) else 0.0,
        processed,
        max(0, p.recipients - processed),
        p.status is CampaignStatus.RUNNING,
    )
    p.rate_per_second = estimate.rate_per_second
    p.eta_seconds = estimate.eta_seconds
    return p
