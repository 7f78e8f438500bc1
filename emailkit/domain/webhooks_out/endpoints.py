"""Webhook endpoints of the workspace in scope: create (the secret is returned once), change, delete, list; their
delivery log; sending a message again.

Every function runs in the caller's transaction and in a workspace scope, so an endpoint or a message of another
workspace is "not found", exactly like a missing id. The per-process subscription cache must be invalidated
after the commit (``emit.subscriptions.invalidate``): the API layer does it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.webhooks_out import (
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEndpointStatus,
    WebhookMessage,
    WebhookMessageStatus,
)
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.webhooks_out import sealing
from emailkit.domain.webhooks_out.delivery import disable_endpoint
from emailkit.domain.webhooks_out.destinations import (
    DestinationRefused,
    InvalidUrl,
    check_endpoint_url,
)
from emailkit.domain.webhooks_out.events import SUBSCRIBABLE

MAX_DESCRIPTION = 1000
MAX_EVENTS = 64
DISABLED_BY_USER = "Disabled through the API"


@dataclass(frozen=True)
class EndpointInput:
    url: str | None = None
    events: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


async def _checked_url(url: str, allow_private: bool) -> str:
    url = url.strip()
    try:
        await check_endpoint_url(url, allow_private=allow_private)
    except InvalidUrl as exc:
        raise DomainError.single(ErrorCode.INVALID_URL, f"Invalid webhook URL: {exc}", "url") from None
    except DestinationRefused as exc:
        raise DomainError.single(ErrorCode.DESTINATION_REFUSED, str(exc), "url") from None
    return url


def _checked_events(events: Sequence[str]) -> list[str]:
    unknown = [e for e in events if e not in SUBSCRIBABLE]
    if unknown:
        raise DomainError(
            [
                FieldError(
                    "events", f"Unknown event type {name!r} (see webhookEventTypes)", ErrorCode.UNKNOWN_EVENT
                )
                for name in unknown
            ]
        )
    if not events:
        raise DomainError.single(ErrorCode.REQUIRED, "Subscribe to at least one event type", "events")
    if len(set(events)) > MAX_EVENTS:
        raise DomainError.single(ErrorCode.TOO_LONG, f"At most {MAX_EVENTS} event types", "events")
    return sorted(set(events))


def _checked_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise DomainError.single(ErrorCode.TOO_LONG, f"At most {MAX_DESCRIPTION} characters", "description")
    return description


async def create_endpoint(
    session: AsyncSession,
    url: str,
    events: Sequence[str],
    description: str,
    *,
    instance_secret: str,
    allow_private: bool,
) -> tuple[WebhookEndpoint, str]:
    """A new ENABLED endpoint and its plaintext secret (``whsec_…``), which is never readable again."""
    checked_events = _checked_events(events)
    checked_description = _checked_description(description or "")
    checked_url = await _checked_url(url, allow_private)
    secret = sealing.new_secret()
    row = WebhookEndpoint(
        url=checked_url,
        events=checked_events,
        description=checked_description,
        secret_sealed=sealing.seal(secret, instance_secret),
        status=WebhookEndpointStatus.ENABLED,
    )
    session.add(row)
    await session.flush()
    return row, secret


async def find_endpoint(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, endpoint_id)


async def get_endpoint(session: AsyncSession, endpoint_id: int, field: str = "id") -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        raise NotFound("Webhook endpoint", field)
    return row


async def update_endpoint(
    session: AsyncSession, endpoint_id: int, changes: EndpointInput, *, allow_private: bool
) -> WebhookEndpoint:
    row = await get_endpoint(session, endpoint_id)
    now = utcnow()
    if changes.events is not None:
        row.events = _checked_events(changes.events)
    if changes.description is not None:
        row.description = _checked_description(changes.description)
    if changes.url is not None:
        row.url = await _checked_url(changes.url, allow_private)
    if changes.enabled is True and row.status is WebhookEndpointStatus.DISABLED:
        row.status = WebhookEndpointStatus.ENABLED
        row.disabled_reason = None
        row.disabled_at = None
        row.failing_since = None
    elif changes.enabled is False and row.status is WebhookEndpointStatus.ENABLED:
        await session.flush()
        await disable_endpoint(session, row.id, DISABLED_BY_USER, now)
        await session.refresh(row)
    row.updated_at = now
    await session.flush()
    return row


async def delete_endpoint(session: AsyncSession, endpoint_id: int) -> int:
    """Delete the endpoint with its messages and their attempts; returns its workspace."""
    row = await get_endpoint(session, endpoint_id)
    workspace_id = row.workspace_id
    # Messages do not reference their endpoint (see the table): deleted here; their attempts follow them.
    await session.execute(
        delete(WebhookMessage)
        .where(WebhookMessage.endpoint_id == endpoint_id)
        .execution_options(synchronize_session=False)
    )
    await session.delete(row)
    await session.flush()
    return workspace_id


async def find_endpoints(session: AsyncSession, *, first: int, after: int | None) -> Page[WebhookEndpoint]:
    return await keyset_page(session, select(WebhookEndpoint), WebhookEndpoint.id, first=first, after=after)


async def find_deliveries(
    session: AsyncSession,
    endpoint_id: int,
    *,
    first: int,
    after: int | None,
    status: WebhookMessageStatus | None = None,
) -> Page[WebhookMessage]:
    """An endpoint's messages, newest first."""
    stmt = select(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookMessage.status == status)
    return await keyset_page(session, stmt, WebhookMessage.id, first=first, after=after, descending=True)


async def attempts_of(
    session: AsyncSession, message_ids: Sequence[int], per_message: int
) -> dict[int, list[WebhookAttempt]]:
    """The latest `per_message` attempts of each message, newest first."""
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in message_ids}
    if not message_ids:
        return found
    rows = await session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.message_id.in_(list(message_ids)))
        .order_by(WebhookAttempt.message_id, WebhookAttempt.id.desc())
    )
    for attempt in rows.scalars():
        bucket = found[attempt.message_id]
        if len(bucket) < per_message:
            bucket.append(attempt)
    return found


async def redeliver(session: AsyncSession, message_id: int, *, now: datetime | None = None) -> WebhookMessage:
    """Send a message again, as a new delivery (same event id and body, so a receiver that saw it already can
    tell), due at once; its endpoint must be enabled. The copy has no ordering key: an operator's explicit
    resend does not wait behind, or hold back, anything."""
    original = await session.get(WebhookMessage, message_id)
    if original is None:
        raise NotFound("Webhook delivery", "deliveryId")
    endpoint = await get_endpoint(session, original.endpoint_id, "deliveryId")
    if endpoint.status is not WebhookEndpointStatus.ENABLED:
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            "The endpoint is disabled: enable it (updateWebhookEndpoint) before redelivering",
            "deliveryId",
        )
    now = now or utcnow()
    copy = WebhookMessage(
        workspace_id=original.workspace_id,
        endpoint_id=original.endpoint_id,
        event_id=original.event_id,
        event_type=original.event_type,
        ordering_key=None,
        payload=original.payload,
        status=WebhookMessageStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        redelivery_of=original.id,
        created_at=now,
    )
    session.add(copy)
    await session.flush()
    return copy
