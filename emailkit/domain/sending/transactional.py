"""Sending one transactional delivery (queued by sendTransactional or a double opt-in confirmation)."""

from __future__ import annotations

from sqlalchemy import update

from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.content import ContentFormat, Template
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import optin
from emailkit.domain.content.rendering import compile_content, render_failure_reason
from emailkit.domain.errors import DomainError
from emailkit.domain.ports.provider import DELIVERY_TAG, Address, OutgoingMessage, SendResult
from emailkit.domain.runtime import Runtime, sender_providers
from emailkit.domain.senders.routing import SenderRoute, SenderUnusable
from emailkit.domain.sending.deliveries import render_context
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths, envelope_sender
from emailkit.domain.webhooks_out import emitters
from emailkit.metrics import record as metrics


class TransientSendFailure(Exception):
    """Raised so the job is retried later (with the queue's backoff)."""

    def __init__(self, error: str, retry_after: float | None) -> None:
        super().__init__(error)
        self.retry_after = retry_after


class _TakenElsewhere(Exception):
    """Raised from the hand-over hook so the provider does not send a message another run has claimed."""


async def send_transactional(runtime: Runtime, delivery_id: int, *, max_attempts: int) -> SendResult | None:
    """Send one QUEUED transactional delivery and record its result; None when another run handled it.

    Raises TransientSendFailure when it should be tried again later.
    """
    setup = runtime.sending
    if setup is None:
        raise RuntimeError("this process was not configured to send mail")
    loaded = await _load(runtime, delivery_id)
    if loaded is None:
        return None
    delivery, template, subscriber = loaded
    domain = setup.config.bounce_domain
    return_paths = ReturnPaths(TokenSigner(runtime.secret_key), domain) if domain else None
    message = _message(delivery, template, subscriber, return_paths)
    provider_name = setup.provider_name
    if isinstance(message, SendResult):
        result = message
    else:
        try:
            # The sender it was queued with, on every attempt.
            async with sender_providers(runtime).use(delivery.sender_id) as route:
                provider_name = route.provider_name
                [result] = await _hand_over(runtime, route, message)
        except _TakenElsewhere:
            return None
        except SenderUnusable as exc:
            result = SendResult.failed(message.delivery_id, str(exc), transient=True)
    attempts = delivery.attempts + 1
    retry = not result.ok and result.transient and attempts < max_attempts
    await _record(runtime, provider_name, delivery_id, result, attempts=attempts, retry=retry)
    outcome = "sent" if result.ok else "deferred" if retry else "failed"
    metrics.emails("transactional", provider_name, outcome)
    if retry:
        raise TransientSendFailure(result.error or "transient failure", result.retry_after)
    return result


async def _load(
    runtime: Runtime, delivery_id: int
) -> tuple[Delivery, Template | None, Subscriber | None] | None:
    """The delivery if it is still QUEUED, with its template and subscriber."""
    async with runtime.db.session() as s:
        delivery = await s.get(Delivery, delivery_id)
        if delivery is not None and delivery.status is DeliveryStatus.SENDING:
            # The queue hands a job over again only once its worker is gone, which died handing this one over.
            await _settle_in_doubt(runtime, delivery_id)
            metrics.emails("transactional", delivery.provider or "none", "in_doubt")
            return None
        if (
            delivery is None
            or delivery.status is not DeliveryStatus.QUEUED
            or delivery.flow_run_id is not None
        ):
            return None  # already handled by an earlier run of this job (or a flow's, which its runner sends)
        template = await s.get(Template, delivery.template_id) if delivery.template_id is not None else None
        subscriber = (
            await s.get(Subscriber, delivery.subscriber_id) if delivery.subscriber_id is not None else None
        )
    return delivery, template, subscriber


def _message(
    delivery: Delivery,
    template: Template | None,
    subscriber: Subscriber | None,
    return_paths: ReturnPaths | None = None,
) -> OutgoingMessage | SendResult:
    """The message to send, or the permanent failure that stands in for it (no template, no render)."""
    delivery_id = delivery.id
    payload = dict(delivery.data or {})
    source: tuple[str, ContentFormat, str] | None = None
    if template is not None:
        source = (template.body, template.format, template.subject)
    elif payload.get("builtin") == optin.BUILTIN_OPTIN:
        source = (optin.DEFAULT_HTML, ContentFormat.HTML, optin.DEFAULT_SUBJECT)
    if source is None:
        return SendResult.failed(str(delivery_id), "the template was deleted before sending", transient=False)
    try:
        content = compile_content(source[0], source[1], subject=source[2])
        rendered = content.render(render_context(subscriber, delivery.email, dict(payload.get("vars") or {})))
    except DomainError as exc:
        # Retrying cannot help a template that does not render with this data (or goes over a limit).
        return SendResult.failed(str(delivery_id), render_failure_reason(exc), transient=False)
    sender = Address(str(payload.get("from_email")), str(payload.get("from_name") or ""))
    return OutgoingMessage(
        delivery_id=str(delivery_id),
        sender=envelope_sender(return_paths, str(delivery_id), sender.email),
        to=Address(delivery.email, subscriber.name if subscriber else ""),
        from_=sender,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        tags={DELIVERY_TAG: str(delivery_id)},
        workspace_id=delivery.workspace_id,
    )


async def _hand_over(runtime: Runtime, route: SenderRoute, message: OutgoingMessage) -> list[SendResult]:
    """Send the message, marking its delivery SENDING right before the provider's final go; raises
    _TakenElsewhere when another run of the delivery marked it first."""
    delivery_id = int(message.delivery_id)
    claimed = False

    async def mark_sending(ids: object) -> None:
        nonlocal claimed
        if claimed:
            return  # the provider hands it over again on a new connection: the row is ours already
        async with runtime.db.transaction() as tx:
            won = await tx.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.QUEUED)
                .values(status=DeliveryStatus.SENDING, provider=route.provider_name)
                .returning(Delivery.id)
            )
            taken = won.scalar_one_or_none() is None
        if taken:
            # Another run of this delivery (a re-enqueued copy of a late message) took it first.
            raise _TakenElsewhere
        claimed = True

    if route.limiter is not None:
        await route.limiter.acquire(1)
    return await route.send_batch([message], on_commit=mark_sending)


async def _record(
    runtime: Runtime, provider: str, delivery_id: int, result: SendResult, *, attempts: int, retry: bool
) -> None:
    values: dict[str, object]
    if result.ok:
        values = {
            "status": DeliveryStatus.SENT,
            "provider_message_id": result.provider_message_id,
            "sent_at": utcnow(),
            "last_error": None,
        }
    elif retry:
        values = {"status": DeliveryStatus.QUEUED, "last_error": result.error}
    else:
        values = {"status": DeliveryStatus.FAILED, "last_error": result.error}
    async with runtime.db.transaction() as s:
        await s.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(attempts=attempts, updated_at=utcnow(), provider=provider, **values)
        )
        if result.ok or not retry:
            await emitters.deliveries_settled(
                s,
                current_workspace_id(),
                sent=[(delivery_id, result.provider_message_id)] if result.ok else [],
                failed=[] if result.ok else [(delivery_id, result.error or "")],
            )


async def _settle_in_doubt(runtime: Runtime, delivery_id: int) -> None:
    async with runtime.db.transaction() as s:
        await s.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENDING)
            .values(status=DeliveryStatus.IN_DOUBT, last_error=IN_DOUBT_NOTE, updated_at=utcnow())
        )
