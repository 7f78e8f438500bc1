"""Mutations on a campaign's sending: start, pause, resume, cancel, schedule, retry failed deliveries, send a
test; and sendTransactional, one message from a TRANSACTIONAL template through the queue."""

from __future__ import annotations

import logging
from datetime import datetime

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from emailkit.db.tables.sending import Campaign as CampaignRow
from emailkit.db.tables.sending import Delivery as DeliveryRow
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.feedback.live import publish_decided
from emailkit.domain.runtime import campaign_sender
from emailkit.domain.sending import deliveries, lifecycle
from emailkit.domain.sending.ab import winner
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.dispatch import Dispatched
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.sending_domains.policy import require_verified_campaign, require_verified_from
from emailkit.domain.validation import normalize_email
from emailkit.schema.context import Info
from emailkit.schema.enums import CampaignStatus
from emailkit.schema.errors import (
    MutationWarning,
    Outcome,
    UserError,
    mutate,
    mutate_then_enqueue,
    to_user_errors,
)
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.campaigns import CampaignType
from emailkit.schema.types.deliveries import DeliveryType
from emailkit.schema.types.senders import sender_pk

log = logging.getLogger(__name__)

MAX_TEST_RECIPIENTS = 10


@strawberry.input
class CampaignIdInput:
    id: strawberry.ID


@strawberry.input
class ScheduleCampaignInput:
    id: strawberry.ID
    send_at: datetime = strawberry.field(
        description="When to start; an ISO 8601 time with an offset. With localTime: the date and time of day "
        "each recipient gets it at on their own clock, its offset ignored (and optional)."
    )
    local_time: bool = strawberry.field(
        default=False,
        description="Send in each recipient's timezone (their timezone attribute, else their list's "
        "defaultTimezone, else the server's): 2031-06-02T09:00:00+02:00 means 09:00 on 2 June wherever "
        "each person is. The campaign starts when the first timezone of its audience is due, and is "
        "FINISHED once the last one has been sent.",
    )


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
    variant_id: strawberry.ID | None = strawberry.field(
        default=None, description="Send this A/B test variant of the campaign. Default: the campaign's own."
    )


@strawberry.input
class PickWinnerInput:
    campaign_id: strawberry.ID
    variant_id: strawberry.ID


@strawberry.input
class SendTransactionalInput:
    template_id: strawberry.ID
    to: str
    data: JSON | None = None
    from_email: str | None = strawberry.field(default=None, description="Default: EMAILKIT_FROM_EMAIL.")
    from_name: str | None = None
    sender_id: strawberry.ID | None = strawberry.field(
        default=None, description="The sender it goes through (every attempt); default: the default sender."
    )


@strawberry.type
class CampaignLifecyclePayload:
    campaign: CampaignType | None
    user_errors: list[UserError]
    warnings: list[MutationWarning] = strawberry.field(
        default_factory=list,
        description="The change was made, but something about it is not yet done (e.g. QUEUE_UNAVAILABLE).",
    )


@strawberry.type
class RetryFailedDeliveriesPayload:
    campaign: CampaignType | None
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
    return CampaignLifecyclePayload(
        campaign=CampaignType.from_model(row) if row is not None else None, user_errors=errors
    )


def _running_payload(info: Info, out: Outcome[Dispatched[CampaignRow]]) -> CampaignLifecyclePayload:
    """After a start or resume: the campaign, and a warning if its batches could not be queued."""
    if out.value is None:
        return _campaign_payload(None, out.errors)
    payload = _campaign_payload(out.value.value, [])
    payload.warnings = _queue_warnings(info, out.value)
    return payload


def _queue_warnings(info: Info, dispatched: Dispatched[object]) -> list[MutationWarning]:
    """With the queue unreachable, a campaign committed RUNNING stays RUNNING and the upkeep ticker re-enqueues
    its batches once the queue is back; say so."""
    if dispatched.queue_error is None:
        return []
    log.warning(
        "batches %s not queued: %s; the ticker will re-enqueue them",
        list(dispatched.jobs.batch_ids),
        dispatched.queue_error,
    )
    setup = info.context.runtime.sending
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


def _config(info: Info) -> SendingConfig:
    setup = info.context.runtime.sending
    return setup.config if setup is not None else SendingConfig()


@strawberry.type
class Mutation:
    @write_mutation(description="DRAFT or SCHEDULED → RUNNING: snapshot the audience and start sending.")
    async def start_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        domains = info.context.runtime.domains

        async def start(s: AsyncSession) -> tuple[CampaignRow, Jobs]:
            campaign_id = decode_id(input.id, "Campaign")
            # Again here: the domain may have been deleted, or failed a check, since the campaign was saved.
            await require_verified_campaign(s, campaign_id, domains)
            return await lifecycle.start_campaign_with_jobs(
                s,
                campaign_id,
                batch_size=_config(info).batch_size,
                default_timezone=_config(info).default_timezone,
            )

        out = await mutate_then_enqueue(info, start)
        return _running_payload(info, out)

    @write_mutation(description="RUNNING → PAUSED: workers stop after their current chunk.")
    async def pause_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(info, lambda s: lifecycle.pause_campaign(s, decode_id(input.id, "Campaign")))
        return _campaign_payload(out.value, out.errors)

    @write_mutation(description="PAUSED → RUNNING: continue where the campaign stopped.")
    async def resume_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate_then_enqueue(
            info, lambda s: lifecycle.resume_campaign_with_jobs(s, decode_id(input.id, "Campaign"))
        )
        return _running_payload(info, out)

    @write_mutation(description="Stop for good; recipients not yet sent to are never sent to.")
    async def cancel_campaign(self, info: Info, input: CampaignIdInput) -> CampaignLifecyclePayload:
        out = await mutate(info, lambda s: lifecycle.cancel_campaign(s, decode_id(input.id, "Campaign")))
        return _campaign_payload(out.value, out.errors)

    @write_mutation(
        description="Start automatically at sendAt (within a few seconds); with localTime, send to each "
        "recipient at sendAt's wall-clock time in their own timezone."
    )
    async def schedule_campaign(self, info: Info, input: ScheduleCampaignInput) -> CampaignLifecyclePayload:
        domains = info.context.runtime.domains

        async def schedule(s: AsyncSession) -> CampaignRow:
            campaign_id = decode_id(input.id, "Campaign")
            await require_verified_campaign(s, campaign_id, domains)
            return await lifecycle.schedule_campaign(
                s,
                campaign_id,
                input.send_at,
                local=input.local_time,
                default_timezone=_config(info).default_timezone,
            )

        out = await mutate(info, schedule)
        return _campaign_payload(out.value, out.errors)

    @write_mutation(
        description="Queue every FAILED delivery of the campaign again (and the IN_DOUBT ones if asked)."
    )
    async def retry_failed_deliveries(
        self, info: Info, input: RetryFailedDeliveriesInput
    ) -> RetryFailedDeliveriesPayload:
        out = await mutate_then_enqueue(
            info,
            lambda s: deliveries.retry_failed_deliveries_with_jobs(
                s,
                decode_id(input.campaign_id, "Campaign", "campaignId"),
                include_in_doubt=input.include_in_doubt,
            ),
        )
        if out.value is None:
            return RetryFailedDeliveriesPayload(campaign=None, retried=0, user_errors=out.errors)
        campaign, count = out.value.value
        return RetryFailedDeliveriesPayload(
            campaign=CampaignType.from_model(campaign),
            retried=count,
            user_errors=[],
            warnings=_queue_warnings(info, out.value),
        )

    @write_mutation(
        description="Choose the winner of a campaign's A/B test by hand, before (or instead of) the automatic "
        "choice: the rest of the audience gets it as soon as the test share has been sent (at once if it has, "
        "once resumed if the campaign is PAUSED). Refused once a winner is chosen."
    )
    async def pick_winner(self, info: Info, input: PickWinnerInput) -> CampaignLifecyclePayload:
        out = await mutate_then_enqueue(
            info,
            lambda s: winner.pick_winner(
                s,
                decode_id(input.campaign_id, "Campaign", "campaignId"),
                decode_id(input.variant_id, "CampaignVariant", "variantId"),
            ),
        )
        if out.value is not None:
            await publish_decided(info.context.db, info.context.runtime.live, [out.value.value.id])
        return _running_payload(info, out)

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
            variant_id = (
                decode_id(input.variant_id, "CampaignVariant", "variantId")
                if input.variant_id is not None
                else None
            )
            results = await campaign_sender(info.context.runtime).send_test(
                campaign_id, emails, as_subscriber=as_subscriber, variant_id=variant_id
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
        domains = info.context.runtime.domains

        async def create(s: AsyncSession) -> tuple[DeliveryRow, Jobs]:
            made = await deliveries.create_transactional(
                s,
                template_id=decode_id(input.template_id, "Template", "templateId"),
                to=input.to,
                data=_data_object(input.data),
                from_email=input.from_email or default_from[0],
                from_name=input.from_name if input.from_name is not None else default_from[1],
                sender_id=sender_pk(input.sender_id) or None,
            )
            # A From the caller names is held to the rule (after its own checks; refused, nothing is kept); the
            # instance's own (EMAILKIT_FROM_EMAIL) is the operator's choice, like the double opt-in mail's.
            if input.from_email:
                await require_verified_from(s, input.from_email, domains)
            return made

        out = await mutate_then_enqueue(info, create)
        if out.value is None:
            return SendTransactionalPayload(delivery=None, user_errors=out.errors)
        # An unreachable queue is answered with a QUEUE_UNAVAILABLE error (this payload has no warnings); the
        # saved message is queued again by the ticker.
        return SendTransactionalPayload(
            delivery=DeliveryType.from_model(out.value.or_raise()), user_errors=[]
        )


def _data_object(value: object) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DomainError.single(ErrorCode.INVALID_INPUT, "data must be a JSON object", "data")
    return value
