"""API keys: generated once, shown once, stored as a SHA-256 hash.

Keys carry 256 bits of randomness, so a fast unsalted hash is enough: there is nothing to brute-force,
and a lookup by hash keeps authentication to one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.boundedcache import BoundedLRU
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, current_workspace_id
from emailkit.db.tables.access import ApiKey, Role
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.errors import ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, raise_if, require

KEY_PREFIX = "ek_"
LAST_USED_GRANULARITY = timedelta(minutes=5)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's identity, role and workspace (None for an instance key)."""

    key_id: int
    name: str
    role: Role
    workspace_id: int | None = None

    @property
    def is_instance_key(self) -> bool:
        return self.role is Role.OWNER


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_api_key(
    session: AsyncSession, name: str, role: Role, *, instance: bool = False
) -> tuple[ApiKey, str]:
    """Create a key in the workspace in scope (or, with `instance`, an OWNER key of no workspace); returns the
    row and the plaintext key, which is never stored."""
    errors: list[FieldError] = []
    require(errors, "name", name, "Name")
    check_length(errors, "name", name, 255)
    if (role is Role.OWNER) != instance:
        errors.append(
            FieldError(
                "role",
                "OWNER keys are instance keys (emailkit create-api-key --instance); "
                "a workspace key is ADMIN, EDITOR or VIEWER",
                ErrorCode.FORBIDDEN,
            )
        )
    raise_if(errors)
    raw = generate_key()
    row = ApiKey(
        name=name.strip(),
        role=role,
        prefix=raw[:10],
        key_hash=hash_key(raw),
        workspace_id=None if instance else current_workspace_id(),
    )
    session.add(row)
    await session.flush()
    return row, raw


async def authenticate(session: AsyncSession, raw: str) -> Principal | None:
    """The key's principal, or None for an unknown or revoked key, or a key of an archived workspace."""
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    # Keys are looked up before anyone knows the workspace: the one cross-workspace read of a request.
    with all_workspaces():
        found = (
            await session.execute(
                select(ApiKey, Workspace.status)
                .outerjoin(Workspace, Workspace.id == ApiKey.workspace_id)
                .where(ApiKey.key_hash == hash_key(raw), ApiKey.revoked_at.is_(None))
            )
        ).one_or_none()
        if found is None:
            return None
        row, workspace_status = found
        if row.workspace_id is not None and workspace_status is not WorkspaceStatus.ACTIVE:
            return None
        now = utcnow()
        # Coarse last-use tracking: at most one write per key every few minutes, not one per request.
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
            await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
            await session.commit()
    return Principal(key_id=row.id, name=row.name, role=row.role, workspace_id=row.workspace_id)


class PrincipalCache:
    """Keys that authenticated recently, by key hash, so that most requests need no database read (the read
    was ≈ 1.1-1.6 ms of a ≈ 15 ms page of 50 subscribers, bench/graphql_wire.py).

    A reader uses an entry for at most its `max_age` seconds (EMAILKIT_API_KEY_CACHE_SECONDS), so a key
    revoked through another process is refused here within that time. A revocation through this process
    empties the cache as soon as it has committed, and a look-up that began before it does not put its
    (possibly stale) answer back. Unknown keys are never kept: whoever guesses keys reaches the database.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        # Weight 1 per entry: a principal is small and bounded by max_entries alone.
        self._entries: BoundedLRU[str, tuple[float, Principal]] = BoundedLRU(
            max_entries=max_entries, max_weight=max_entries
        )
        self._generation = 0

    def forget_all(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def authenticate(self, db: Database, raw: str, *, max_age: float) -> Principal | None:
        if max_age <= 0:
            async with db.read_session() as session:
                return await authenticate(session, raw)
        digest = hash_key(raw)
        found = self._entries.get(digest)
        now = time.monotonic()
        if found is not None and now - found[0] < max_age:
            return found[1]
        generation = self._generation
        async with db.read_session() as session:
            principal = await authenticate(session, raw)
        if principal is None:
            self._entries.discard(digest)
        elif generation == self._generation:
            self._entries.put(digest, (now, principal), 1)
        return principal


async def is_active(session: AsyncSession, key_id: int) -> bool:
    """Whether the key still exists, is not revoked, and its workspace (if any) is not archived."""
    with all_workspaces():
        found = await session.execute(
            select(ApiKey.id)
            .outerjoin(Workspace, Workspace.id == ApiKey.workspace_id)
            .where(
                ApiKey.id == key_id,
                ApiKey.revoked_at.is_(None),
                (ApiKey.workspace_id.is_(None)) | (Workspace.status == WorkspaceStatus.ACTIVE),
            )
        )
        return found.first() is not None


def _in_scope() -> ColumnElement[bool]:
    # ApiKey is not a tenant table (instance keys have no workspace): its queries filter by hand.
    return ApiKey.workspace_id == current_workspace_id()


async def revoke_api_key(session: AsyncSession, key_id: int) -> ApiKey:
    row = (await session.execute(select(ApiKey).where(ApiKey.id == key_id, _in_scope()))).scalar_one_or_none()
    if row is None:
        raise NotFound("API key", code=ErrorCode.NOT_FOUND)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def find_api_keys(session: AsyncSession, *, first: int, after: int | None) -> Page[ApiKey]:
    return await keyset_page(session, select(ApiKey).where(_in_scope()), ApiKey.id, first=first, after=after)
