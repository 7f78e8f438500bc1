"""Queries of senders: `senders`, `sender` and `defaultSender` (ADMIN keys)."""

from __future__ import annotations

import strawberry

from emailkit.domain.senders import store
from emailkit.schema.context import Info
from emailkit.schema.permissions import admin_field
from emailkit.schema.relay import Connection, decode_id_or_none
from emailkit.schema.types.senders import DEFAULT_SENDER_PK, SenderView


@strawberry.type
class Query:
    @admin_field(description="This workspace's senders, oldest first (the default sender is defaultSender).")
    async def senders(self, info: Info, first: int = 50, after: str | None = None) -> Connection[SenderView]:
        return await info.context.connection(
            lambda s, n, a: store.find_senders(s, first=n, after=a), SenderView.from_model, first, after
        )

    @admin_field(description="One sender of this workspace (or the default one); null when there is none.")
    async def sender(self, info: Info, id: strawberry.ID) -> SenderView | None:
        pk = decode_id_or_none(id, "Sender")
        if pk is None:
            return None
        if pk == DEFAULT_SENDER_PK:
            return SenderView.default_of(info.context.runtime)
        async with info.context.loaders.session() as session:
            row = await store.find_sender(session, pk)
            return None if row is None else SenderView.from_model(row)

    @admin_field(
        description="The instance's default sender (EMAILKIT_PROVIDER and its variables): what campaigns, "
        "lists, flows and transactional messages that name no sender go through. Null where this server "
        "does not send."
    )
    def default_sender(self, info: Info) -> SenderView | None:
        return SenderView.default_of(info.context.runtime)
