"""Outgoing webhooks: the WebhookEndpoint type, its deliveries (the delivery log) and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry
from strawberry.dataloader import DataLoader

from emailkit.db.tables.webhooks_out import WebhookAttempt as AttemptRow
from emailkit.db.tables.webhooks_out import WebhookEndpoint as EndpointRow
from emailkit.db.tables.webhooks_out import WebhookEndpointStatus, WebhookMessageStatus
from emailkit.db.tables.webhooks_out import WebhookMessage as MessageRow
from emailkit.domain.webhooks_out import endpoints
from emailkit.schema.context import Info
from emailkit.schema.relay import Connection, to_global_id

strawberry.enum(
    WebhookEndpointStatus,
    name="WebhookEndpointStatus",
    description="ENABLED receives events; DISABLED does not (see disabledReason: its owner, or emailkit after "
    "three days of failed deliveries).",
)
strawberry.enum(
    WebhookMessageStatus,
    name="WebhookDeliveryStatus",
    description="PENDING: not delivered yet (see nextAttemptAt); SUCCEEDED: answered 2xx; FAILED: retries spent "
    "(about 24 hours) or the endpoint was disabled.",
)

# Attempts shown per delivery at most.
MAX_ATTEMPTS_SHOWN = 20
_ATTEMPTS_LOADER = "webhook_attempts"


@strawberry.type(name="WebhookDeliveryAttempt", description="One HTTP attempt at delivering a message.")
class WebhookAttemptType:
    attempted_at: datetime
    succeeded: bool
    response_code: int | None = strawberry.field(description="The HTTP status; null when no answer came.")
    duration_ms: int
    error: str | None

    @classmethod
    def from_model(cls, row: AttemptRow) -> WebhookAttemptType:
        return cls(
            attempted_at=row.attempted_at,
            succeeded=row.succeeded,
            response_code=row.response_code,
            duration_ms=row.duration_ms,
            error=row.error,
        )


def _attempts_loader(info: Info) -> DataLoader[int, list[AttemptRow]]:
    """One statement for the attempts of every delivery of a page (per request)."""
    loader = info.context.extra.get(_ATTEMPTS_LOADER)
    if loader is None:

        async def load(ids: Sequence[int]) -> list[list[AttemptRow]]:
            async with info.context.loaders.session() as session:
                found = await endpoints.attempts_of(session, ids, MAX_ATTEMPTS_SHOWN)
            return [found[i] for i in ids]

        loader = info.context.extra[_ATTEMPTS_LOADER] = DataLoader(load_fn=load)
    return loader


@strawberry.type(
    name="WebhookDelivery",
    description="One event owed to one endpoint, and where its delivery stands. The same event sent to two "
    "endpoints is two deliveries with the same eventId.",
)
class WebhookDeliveryType:
    pk: strawberry.Private[int]
    id: strawberry.ID
    event_id: str = strawberry.field(description="The envelope's id, sent as the `webhook-id` header.")
    event_type: str
    status: WebhookMessageStatus
    response_code: int | None = strawberry.field(
        description="HTTP status of the last attempt, if it got one."
    )
    duration_ms: int | None = strawberry.field(description="Duration of the last attempt.")
    attempt_count: int
    next_attempt_at: datetime | None = strawberry.field(description="When a PENDING delivery is tried next.")
    last_attempt_at: datetime | None
    error: str | None = strawberry.field(description="The last attempt's error, or why it FAILED.")
    created_at: datetime
    delivered_at: datetime | None
    payload: str = strawberry.field(description="The JSON body sent (the same bytes every attempt).")
    redelivery_of: strawberry.ID | None = strawberry.field(
        description="The delivery this one sends again (redeliverWebhook)."
    )

    @strawberry.field(description=f"The latest attempts, newest first (at most {MAX_ATTEMPTS_SHOWN}).")
    async def attempts(self, info: Info) -> list[WebhookAttemptType]:
        rows = await _attempts_loader(info).load(self.pk)
        return [WebhookAttemptType.from_model(r) for r in rows]

    @classmethod
    def from_model(cls, row: MessageRow) -> WebhookDeliveryType:
        return cls(
            pk=row.id,
            id=to_global_id("WebhookDelivery", row.id),
            event_id=row.event_id,
            event_type=row.event_type,
            status=row.status,
            response_code=row.response_code,
            duration_ms=row.duration_ms,
            attempt_count=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_attempt_at=row.last_attempt_at,
            error=row.error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            payload=row.payload,
            redelivery_of=None
            if row.redelivery_of is None
            else to_global_id("WebhookDelivery", row.redelivery_of),
        )


@strawberry.type(
    name="WebhookEndpoint",
    description="A URL that receives this workspace's events of the types it subscribed to, signed with its "
    'secret (Standard Webhooks; see the README, "Webhooks you receive from emailkit").',
)
class WebhookEndpointType:
    # Deliberately not a Node: `node(id)` is open to every role, and endpoints are for ADMIN keys.
    pk: strawberry.Private[int]
    id: strawberry.ID
    url: str
    description: str
    events: list[str]
    status: WebhookEndpointStatus
    enabled: bool
    disabled_reason: str | None = strawberry.field(description="Why a DISABLED endpoint was disabled.")
    disabled_at: datetime | None
    failing_since: datetime | None = strawberry.field(
        description="Start of the current run of failed attempts (null after a success); three days of it "
        "disable the endpoint."
    )
    secret: str | None = strawberry.field(
        description="The signing secret (whsec_…). Only in createWebhookEndpoint's payload: null everywhere "
        "else, since it cannot be read back."
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The endpoint's deliveries, newest first (kept 30 days once ended).")
    async def deliveries(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        status: WebhookMessageStatus | None = None,
    ) -> Connection[WebhookDeliveryType]:
        pk = self.pk
        return await info.context.connection(
            lambda s, n, a: endpoints.find_deliveries(s, pk, first=n, after=a, status=status),
            WebhookDeliveryType.from_model,
            first,
            after,
        )

    @classmethod
    def from_model(cls, row: EndpointRow, *, secret: str | None = None) -> WebhookEndpointType:
        return cls(
            pk=row.id,
            id=to_global_id("WebhookEndpoint", row.id),
            url=row.url,
            description=row.description,
            events=list(row.events or []),
            status=row.status,
            enabled=row.status is WebhookEndpointStatus.ENABLED,
            disabled_reason=row.disabled_reason,
            disabled_at=row.disabled_at,
            failing_since=row.failing_since,
            secret=secret,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
