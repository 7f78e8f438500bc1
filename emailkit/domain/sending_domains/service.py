"""Sending domains of the workspace in scope: create (keys made here), find, list, delete, and record a check.

Every function runs in the caller's transaction and workspace scope, so another workspace's domain is "not
found", exactly like a missing id. The DNS lookups of a check run outside any transaction (they may take
seconds): read the domain, check, then ``record_check`` in a short transaction. After each committed change,
``keyring.changes.invalidate(workspace_id)`` makes this process's keyrings read the domains again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.sending_domains import keys
from emailkit.domain.sending_domains.dns_check import INCONCLUSIVE, RecordCheck, RecordStatus
from emailkit.domain.sending_domains.names import normalise_domain
from emailkit.domain.sending_domains.records import ExpectedRecord


async def create_domain(
    session: AsyncSession, domain: str, *, instance_secret: str, ed25519: bool
) -> SendingDomain:
    """A new, unverified sending domain with a fresh RSA-2048 key pair (and an Ed25519 one if asked)."""
    name = normalise_domain(domain)
    await _refuse_duplicate(session, name)
    # Generating an RSA key takes tens of milliseconds of CPU: not on the event loop.
    rsa_keys = await asyncio.to_thread(keys.rsa_pair)
    ed_keys = keys.ed25519_pair() if ed25519 else None
    selector = keys.new_selector()
    row = SendingDomain(
        domain=name,
        selector=selector,
        private_key_sealed=keys.seal(rsa_keys.private_pem, instance_secret),
        public_key=rsa_keys.public,
        ed25519_selector=f"{selector}e" if ed_keys else None,
        ed25519_private_key_sealed=keys.seal(ed_keys.private_pem, instance_secret) if ed_keys else None,
        ed25519_public_key=ed_keys.public if ed_keys else None,
        verified=False,
        checks=[],
    )
    try:
        # A savepoint: a concurrent create of the same name that committed first fails this insert alone.
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise _duplicate(name) from None
    return row


def _duplicate(name: str) -> DomainError:
    return DomainError.single(
        ErrorCode.DUPLICATE_DOMAIN, f"This workspace already has the sending domain {name}", "domain"
    )


async def _refuse_duplicate(session: AsyncSession, name: str) -> None:
    # Before the keys are made; the unique constraint still decides between two concurrent creates.
    found = await session.scalar(select(SendingDomain.id).where(SendingDomain.domain == name))
    if found is not None:
        raise _duplicate(name)


async def find_domain(session: AsyncSession, domain_id: int) -> SendingDomain | None:
    return await session.get(SendingDomain, domain_id)


async def get_domain(session: AsyncSession, domain_id: int, field: str = "id") -> SendingDomain:
    row = await session.get(SendingDomain, domain_id)
    if row is None:
        raise NotFound("Sending domain", field, code=ErrorCode.SENDING_DOMAIN_NOT_FOUND)
    return row


async def find_domains(session: AsyncSession, *, first: int, after: int | None) -> Page[SendingDomain]:
    return await keyset_page(session, select(SendingDomain), SendingDomain.id, first=first, after=after)


async def delete_domain(session: AsyncSession, domain_id: int) -> int:
    """Delete the domain and its keys; returns its workspace."""
    row = await get_domain(session, domain_id)
    workspace_id = row.workspace_id
    await session.delete(row)
    await session.flush()
    return workspace_id


def verified_by(checks: Sequence[RecordCheck], expected: Sequence[ExpectedRecord], was: bool) -> bool:
    """Verified once every required record is FOUND; no longer once one is MISSING or WRONG. A check that got
    no answer (TIMEOUT, ERROR) for a required record changes nothing: an outage of the DNS is not the domain's."""
    required = [c for c, e in zip(checks, expected, strict=True) if e.required]
    if all(c.status is RecordStatus.FOUND for c in required):
        return True
    if any(c.status not in INCONCLUSIVE and c.status is not RecordStatus.FOUND for c in required):
        return False
    return was


async def record_check(
    session: AsyncSession,
    domain_id: int,
    checks: Sequence[RecordCheck],
    expected: Sequence[ExpectedRecord],
) -> SendingDomain:
    row = await get_domain(session, domain_id)
    now = utcnow()
    verified = verified_by(checks, expected, row.verified)
    if verified and not row.verified:
        row.verified_at = now
    elif not verified:
        row.verified_at = None
    row.verified = verified
    row.last_checked_at = now
    row.checks = [c.as_json() for c in checks]
    await session.flush()
    return row


async def verified_domains(session: AsyncSession) -> list[str]:
    """The workspace's verified domain names."""
    rows = await session.scalars(select(SendingDomain.domain).where(SendingDomain.verified.is_(True)))
    return list(rows)
