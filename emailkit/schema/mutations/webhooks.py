"""Mutations of outgoing webhooks (ADMIN keys): create (the secret is returned once), update, delete, redeliver.

After every committed change to an endpoint this process forgets its cached answer to "who listens?", so the
next event emitted here sees the change at once (other processes within a few seconds; see ``emit``).
"""

from __future__ import annotations

import strawberry

from emailkit.db.scope import current_workspace_id
from emailkit.domain.webhooks_out import endpoints
from emailkit.domain.webhooks_out.emit import subscriptions
from emailkit.schema.context import Info
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import admin_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.webhooks import WebhookDeliveryType, WebhookEndpointType


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="http:// or https://; loopback and private addresses are refused."
    )
    events: list[str] = strawberry.field(description="Event type names (see webhookEventTypes).")
    description: str = ""


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = strawberry.field(
        default=None,
        description="false disables it (its pending deliveries fail); true enables a disabled one again.",
    )


@strawberry.input
class DeleteWebhookEndpointInput:
    id: strawberry.ID


@strawberry.input
class RedeliverWebhookInput:
    delivery_id: strawberry.ID


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpointType | None
    user_errors: list[UserError]


@strawberry.type
class RedeliverWebhookPayload:
    delivery: WebhookDeliveryType | None = strawberry.field(description="The new delivery, due at once.")
    user_errors: list[UserError]


def _changed() -> None:
    subscriptions.invalidate(current_workspace_id())


@strawberry.type
class Mutation:
    @admin_mutation(
        description="Register an endpoint. Store `endpoint.secret` from the payload: it is the key that signs "
        "every message, and it cannot be read again."
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        runtime = info.context.runtime
        out = await mutate(
            info,
            lambda s: endpoints.create_endpoint(
                s,
                input.url,
                input.events,
                input.description,
                instance_secret=runtime.secret_key,
                allow_private=runtime.webhooks.config.allow_private,
            ),
        )
        if out.value is None:
            return WebhookEndpointPayload(endpoint=None, user_errors=out.errors)
        _changed()
        row, secret = out.value
        return WebhookEndpointPayload(
            endpoint=WebhookEndpointType.from_model(row, secret=secret), user_errors=[]
        )

    @admin_mutation(description="Change an endpoint's URL, events or description, or disable or enable it.")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        changes = endpoints.EndpointInput(
            url=input.url, events=input.events, description=input.description, enabled=input.enabled
        )
        allow_private = info.context.runtime.webhooks.config.allow_private
        out = await mutate(
            info,
            lambda s: endpoints.update_endpoint(
                s, decode_id(input.id, "WebhookEndpoint"), changes, allow_private=allow_private
            ),
        )
        if out.value is not None:
            _changed()
        return WebhookEndpointPayload(
            endpoint=WebhookEndpointType.from_model(out.value) if out.value is not None else None,
            user_errors=out.errors,
        )

    @admin_mutation(description="Delete an endpoint with its delivery log; nothing more is sent to it.")
    async def delete_webhook_endpoint(self, info: Info, input: DeleteWebhookEndpointInput) -> DeletePayload:
        out = await mutate(
            info, lambda s: endpoints.delete_endpoint(s, decode_id(input.id, "WebhookEndpoint"))
        )
        if out.value is not None:
            _changed()
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)

    @admin_mutation(
        description="Send a delivery's event again, as a new delivery due at once (same event id and body). "
        "The endpoint must be enabled."
    )
    async def redeliver_webhook(self, info: Info, input: RedeliverWebhookInput) -> RedeliverWebhookPayload:
        out = await mutate(
            info,
            lambda s: endpoints.redeliver(s, decode_id(input.delivery_id, "WebhookDelivery", "deliveryId")),
        )
        return RedeliverWebhookPayload(
            delivery=WebhookDeliveryType.from_model(out.value) if out.value is not None else None,
            user_errors=out.errors,
        )
