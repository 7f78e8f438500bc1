"""Mutations of sending domains (ADMIN keys): create (the keys are made on the server), verify, delete.

After each committed change this process's keyrings read the workspace's domains again (``keyring.changes``),
so mail sent from here signs with the change at once; other processes see it within their refresh interval.
"""

from __future__ import annotations

import strawberry

from emailkit.db.scope import current_workspace_id
from emailkit.domain.errors import DomainError
from emailkit.domain.sending_domains import service
from emailkit.domain.sending_domains.dns_check import check_records
from emailkit.domain.sending_domains.keyring import changes
from emailkit.domain.sending_domains.records import expected_records
from emailkit.schema.context import Info
from emailkit.schema.errors import DeletePayload, UserError, mutate, to_user_errors
from emailkit.schema.permissions import admin_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.sending_domains import SendingDomainType


@strawberry.input
class CreateSendingDomainInput:
    domain: str = strawberry.field(
        description="The domain mail is sent From, e.g. example.com or news.example.com (an internationalised "
        "name is stored in its ASCII form). No IP address, no trailing dot."
    )
    ed25519: bool | None = strawberry.field(
        default=None,
        description="Also make an Ed25519 key, for a second DKIM signature (RFC 8463); default: "
        "EMAILKIT_DKIM_ED25519.",
    )


@strawberry.input
class SendingDomainIdInput:
    id: strawberry.ID


@strawberry.type
class SendingDomainPayload:
    sending_domain: SendingDomainType | None
    user_errors: list[UserError]


def _changed() -> None:
    changes.invalidate(current_workspace_id())


@strawberry.type
class Mutation:
    @admin_mutation(
        description="Add a sending domain: its DKIM key pair is generated here (RSA 2048, and Ed25519 if "
        "asked). Publish `dnsRecords`, then call verifySendingDomain."
    )
    async def create_sending_domain(
        self, info: Info, input: CreateSendingDomainInput
    ) -> SendingDomainPayload:
        runtime = info.context.runtime
        ed25519 = runtime.domains.ed25519 if input.ed25519 is None else input.ed25519
        out = await mutate(
            info,
            lambda s: service.create_domain(
                s, input.domain, instance_secret=runtime.secret_key, ed25519=ed25519
            ),
        )
        if out.value is not None:
            _changed()
        return SendingDomainPayload(
            sending_domain=SendingDomainType.from_model(out.value) if out.value is not None else None,
            user_errors=out.errors,
        )

    @admin_mutation(
        description="Look the domain's records up in DNS and report each one (dnsRecords' status and seen). "
        "The domain is verified once every required record is FOUND."
    )
    async def verify_sending_domain(self, info: Info, input: SendingDomainIdInput) -> SendingDomainPayload:
        config = info.context.runtime.domains
        try:
            pk = decode_id(input.id, "SendingDomain")
            async with info.context.loaders.session() as session:
                row = await service.get_domain(session, pk)
                expected = expected_records(row, config)
        except DomainError as exc:
            return SendingDomainPayload(sending_domain=None, user_errors=to_user_errors(exc))
        # Outside any transaction: the lookups may take up to EMAILKIT_DNS_TIMEOUT.
        checks = await check_records(expected, config)
        out = await mutate(info, lambda s: service.record_check(s, pk, checks, expected))
        if out.value is not None:
            _changed()
        return SendingDomainPayload(
            sending_domain=SendingDomainType.from_model(out.value) if out.value is not None else None,
            user_errors=out.errors,
        )

    @admin_mutation(
        description="Delete a sending domain and its keys; its mail is no longer signed with them."
    )
    async def delete_sending_domain(self, info: Info, input: SendingDomainIdInput) -> DeletePayload:
        out = await mutate(info, lambda s: service.delete_domain(s, decode_id(input.id, "SendingDomain")))
        if out.value is not None:
            _changed()
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)
