"""Sending domains: the SendingDomain type and the DNS records it asks to publish, with what the last check saw."""

from __future__ import annotations

from datetime import datetime

import strawberry

from emailkit.db.tables.sending_domains import SendingDomain as DomainRow
from emailkit.domain.sending_domains.dns_check import RecordCheck, RecordStatus
from emailkit.domain.sending_domains.records import RecordKind, expected_records
from emailkit.schema.context import Info
from emailkit.schema.relay import to_global_id

strawberry.enum(
    RecordKind,
    name="DnsRecordKind",
    description="DKIM (the RSA key), DKIM_ED25519 (the second key, RFC 8463), SPF, DMARC (a suggestion), "
    "RETURN_PATH (bounces.<domain> to the bounce server, when one is configured).",
)
strawberry.enum(
    RecordStatus,
    name="DnsRecordStatus",
    description="What the last verifySendingDomain found: FOUND as expected; MISSING; WRONG (see `seen` and "
    "`detail`); TIMEOUT (no DNS answer in time) or ERROR (the DNS failed), which leave `verified` as it was; "
    "UNCHECKED before the first check.",
)


@strawberry.type(name="DnsRecord", description="A DNS record to publish, and what the last check found.")
class DnsRecordType:
    kind: RecordKind
    type: str = strawberry.field(description="TXT or CNAME.")
    name: str = strawberry.field(description="The full name to publish it at (no trailing dot).")
    value: str = strawberry.field(
        description="The value to publish. A TXT value longer than 255 characters (the RSA key's) is split into "
        "several strings by most DNS consoles; receivers read them as one."
    )
    required: bool = strawberry.field(
        description="The domain is verified once every required record is FOUND; the others are advice."
    )
    status: RecordStatus
    seen: list[str] = strawberry.field(description="What the last check found at that name (of that kind).")
    detail: str | None = strawberry.field(
        description="Why a record is WRONG, or what went wrong looking it up."
    )
    checked_at: datetime | None


@strawberry.type(
    name="SendingDomain",
    description="A domain this workspace sends From: its DKIM keys (the private ones never leave the server) "
    'and the DNS records that prove it owns them (see the README, "Senders and domains").',
)
class SendingDomainType:
    # Deliberately not a Node: `node(id)` is open to every role, and sending domains are for ADMIN keys.
    row: strawberry.Private[DomainRow]
    id: strawberry.ID
    domain: str = strawberry.field(description="Lower-case, in its ASCII (IDNA) form.")
    selector: str = strawberry.field(description="The RSA key's DKIM selector (s=).")
    ed25519_selector: str | None = strawberry.field(
        description="The Ed25519 key's selector, when the domain has one (a second DKIM-Signature)."
    )
    verified: bool = strawberry.field(
        description="Every required record was FOUND by a check (and none found MISSING or WRONG since). Mail "
        "From a verified domain (or a subdomain of it) is DKIM-signed with its keys."
    )
    verified_at: datetime | None
    last_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The records to publish, in this order, with the last check's findings.")
    def dns_records(self, info: Info) -> list[DnsRecordType]:
        row = self.row
        checks: dict[tuple[RecordKind, str], RecordCheck] = {}
        for data in row.checks or []:
            try:
                check = RecordCheck.from_json(data)
            except (KeyError, ValueError):
                continue
            checks[(check.kind, check.name)] = check
        records = []
        for expected in expected_records(row, info.context.runtime.domains):
            found = checks.get((expected.kind, expected.name))
            records.append(
                DnsRecordType(
                    kind=expected.kind,
                    type=expected.type,
                    name=expected.name,
                    value=expected.value,
                    required=expected.required,
                    status=found.status if found is not None else RecordStatus.UNCHECKED,
                    seen=list(found.seen) if found is not None else [],
                    detail=found.detail if found is not None else None,
                    checked_at=row.last_checked_at if found is not None else None,
                )
            )
        return records

    @classmethod
    def from_model(cls, row: DomainRow) -> SendingDomainType:
        return cls(
            row=row,
            id=to_global_id("SendingDomain", row.id),
            domain=row.domain,
            selector=row.selector,
            ed25519_selector=row.ed25519_selector,
            verified=row.verified,
            verified_at=row.verified_at,
            last_checked_at=row.last_checked_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
