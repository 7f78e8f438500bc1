"""Mutations of senders (ADMIN keys): create, update, delete (refused while in use) and test.

Settings and credentials are checked by building the provider from them (nothing connects); testSender
connects and authenticates, sending nothing. Credentials are never in a payload.
"""

from __future__ import annotations

from datetime import date

import strawberry
from strawberry.scalars import JSON

from emailkit.db.tables.senders import Sender as SenderRow
from emailkit.db.tables.senders import SenderType
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.ports.senders import ProviderFactory
from emailkit.domain.runtime import sender_providers
from emailkit.domain.senders import store
from emailkit.schema.context import Info
from emailkit.schema.errors import DeletePayload, UserError, mutate, to_user_errors
from emailkit.schema.permissions import admin_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.senders import DEFAULT_SENDER_PK, SenderView

_SETTINGS = "The provider's non-secret settings (camelCase keys; per type in the README)."
_CREDENTIALS = (
    "Secrets, a JSON object of strings (e.g. {username, password}): sealed at rest, never returned."
)


@strawberry.input(name="SenderWarmupInput")
class WarmupInput:
    start_per_day: int = strawberry.field(description="Messages on the first day (at least 1).")
    growth_percent: float = strawberry.field(description="Growth per day, in percent (0-1000).")
    ceiling_per_day: int = strawberry.field(description="Never more than this a day (at least startPerDay).")
    starts_on: date | None = strawberry.field(
        default=None, description="The plan's first day (UTC); default: the day it is set."
    )


_WARMUP = "A warm-up plan for campaigns and flows' SEND steps (transactional mail is exempt)."


@strawberry.input
class CreateSenderInput:
    name: str = strawberry.field(description="Unique in the workspace.")
    type: SenderType
    settings: JSON | None = strawberry.field(default=None, description=_SETTINGS)
    credentials: JSON | None = strawberry.field(default=None, description=_CREDENTIALS)
    rate_per_second: float | None = strawberry.field(
        default=None, description="Messages per second over all workers; default: no limit of its own."
    )
    pool_size: int | None = strawberry.field(
        default=None,
        description=f"Connections or requests at once per worker (1-{store.MAX_POOL_SIZE}; "
        f"default {store.DEFAULT_POOL_SIZE}).",
    )
    warmup: WarmupInput | None = strawberry.field(default=None, description=_WARMUP)


@strawberry.input
class UpdateSenderInput:
    id: strawberry.ID
    name: str | None = None
    type: SenderType | None = None
    settings: JSON | None = strawberry.field(default=None, description="Replaces the settings whole.")
    credentials: JSON | None = strawberry.field(
        default=None, description="Replaces the credentials whole when given; omitted: they stay."
    )
    rate_per_second: float | None = strawberry.field(default=None, description="0 removes the limit.")
    pool_size: int | None = None
    warmup: WarmupInput | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"{_WARMUP} Replaces the plan whole (a new one starts today unless startsOn says); null "
        "removes it; omitted: it stays.",
    )


@strawberry.input
class DeleteSenderInput:
    id: strawberry.ID


@strawberry.input
class TestSenderInput:
    id: strawberry.ID = strawberry.field(description="A sender, or defaultSender's id.")


@strawberry.type
class SenderPayload:
    sender: SenderView | None
    user_errors: list[UserError]


@strawberry.type
class TestSenderPayload:
    sender: SenderView | None
    ok: bool = strawberry.field(description="The provider accepted the connection and the credentials.")
    message: str | None = strawberry.field(description="The provider's answer (or why there was none).")
    user_errors: list[UserError]


def _factory(info: Info) -> ProviderFactory:
    factory = info.context.runtime.sender_factory
    if factory is None:
        raise DomainError.single(
            ErrorCode.INVALID_STATE, "This server cannot build senders' providers", "type"
        )
    return factory


def _warmup(input: WarmupInput | None) -> store.WarmupInput | None:
    if not input:
        return None
    return store.WarmupInput(
        input.start_per_day, input.growth_percent, input.ceiling_per_day, input.starts_on
    )


def _input(input: CreateSenderInput | UpdateSenderInput) -> store.SenderInput:
    return store.SenderInput(
        name=input.name,
        type=input.type,
        settings=input.settings,
        credentials=input.credentials,
        rate_per_second=input.rate_per_second,
        pool_size=input.pool_size,
        warmup=_warmup(input.warmup),
        clear_warmup=input.warmup is None,
    )


def _payload(row: SenderRow | None, errors: list[UserError]) -> SenderPayload:
    return SenderPayload(sender=SenderView.from_model(row) if row is not None else None, user_errors=errors)


@strawberry.type
class Mutation:
    @admin_mutation(
        description="Create a sender; its settings and credentials are checked before it is saved."
    )
    async def create_sender(self, info: Info, input: CreateSenderInput) -> SenderPayload:
        runtime = info.context.runtime
        out = await mutate(
            info,
            lambda s: store.create_sender(
                s,
                _input(input),
                instance_secret=runtime.secret_key,
                build=_factory(info),
                allow_private=runtime.sender_allow_private,
                mailboxes=runtime.sender_mailboxes,
            ),
        )
        return _payload(out.value, out.errors)

    @admin_mutation(
        description="Change a sender; workers send through the changed one from their next batch on."
    )
    async def update_sender(self, info: Info, input: UpdateSenderInput) -> SenderPayload:
        runtime = info.context.runtime
        out = await mutate(
            info,
            lambda s: store.update_sender(
                s,
                decode_id(input.id, "Sender"),
                _input(input),
                instance_secret=runtime.secret_key,
                build=_factory(info),
                allow_private=runtime.sender_allow_private,
                mailboxes=runtime.sender_mailboxes,
            ),
        )
        return _payload(out.value, out.errors)

    @admin_mutation(
        description="Delete a sender; refused (IN_USE) while an unfinished campaign, a list or a flow's SEND "
        "step names it."
    )
    async def delete_sender(self, info: Info, input: DeleteSenderInput) -> DeletePayload:
        out = await mutate(info, lambda s: store.delete_sender(s, decode_id(input.id, "Sender")))
        ok = not out.errors
        return DeletePayload(deleted_id=input.id if ok else None, user_errors=out.errors)

    @admin_mutation(
        description="Connect to the sender's provider and authenticate, sending nothing; ok and message say "
        "what the provider answered."
    )
    async def test_sender(self, info: Info, input: TestSenderInput) -> TestSenderPayload:
        runtime = info.context.runtime
        try:
            pk = decode_id(input.id, "Sender")
            if pk == DEFAULT_SENDER_PK:
                if runtime.sending is None:
                    raise DomainError.single(ErrorCode.NOT_FOUND, "This server does not send", "id")
                result = await sender_providers(runtime).default().provider.probe()
                return TestSenderPayload(
                    sender=SenderView.default_of(runtime),
                    ok=result.ok,
                    message=result.message,
                    user_errors=[],
                )
            result = await store.probe_sender(
                runtime.db,
                pk,
                instance_secret=runtime.secret_key,
                build=_factory(info),
                mailboxes=runtime.sender_mailboxes,
            )
            async with info.context.loaders.session() as session:
                row = await store.find_sender(session, pk)
        except DomainError as exc:
            return TestSenderPayload(sender=None, ok=False, message=None, user_errors=to_user_errors(exc))
        return TestSenderPayload(
            sender=SenderView.from_model(row) if row is not None else None,
            ok=result.ok,
            message=result.message,
            user_errors=[],
        )
