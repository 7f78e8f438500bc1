"""Workspaces: creating and archiving tenants, and deciding which one a request acts in.

The workspace table is read and written for all workspaces (an instance key manages them); everything else a
request does runs in the one workspace :func:`acting_workspace` picked, see ``db.scope``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.scope import all_workspaces
from emailkit.db.tables.access import Role
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID, Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.apikeys import Principal
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, raise_if, require

HEADER = "X-Emailkit-Workspace"
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
BRANDING_KEYS = ("name", "logoUrl", "accentColor", "footer")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


class WrongWorkspace(Exception):
    """A workspace key named another workspace, or an instance key named one that does not exist."""


@dataclass(frozen=True)
class WorkspaceInput:
    name: str | None = None
    slug: str | None = None
    public_url: str | None = None
    branding: dict[str, Any] | None = None
    quota_subscribers: int | None = None
    quota_emails_per_day: int | None = None
    # Which of the nullable settings the caller set (to None clears them).
    given: frozenset[str] = frozenset()


def _check(errors: list[FieldError], data: WorkspaceInput, *, creating: bool) -> None:
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
        check_length(errors, "name", data.name or "", 255)
    if creating or data.slug is not None:
        if not data.slug or not _SLUG.fullmatch(data.slug):
            errors.append(
                FieldError(
                    "slug",
                    "A slug is 1-63 lower-case letters, digits and inner hyphens (it is part of public URLs)",
                    ErrorCode.INVALID_SLUG,
                )
            )
    if data.public_url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", data.public_url):
        errors.append(FieldError("publicUrl", "Give an http(s) URL with no query", ErrorCode.INVALID_INPUT))
    for field, value in (
        ("quotaSubscribers", data.quota_subscribers),
        ("quotaEmailsPerDay", data.quota_emails_per_day),
    ):
        if value is not None and value < 0:
            errors.append(
                FieldError(field, "A quota is 0 or more (leave it out for none)", ErrorCode.INVALID_INPUT)
            )
    for key, value in (data.branding or {}).items():
        if key not in BRANDING_KEYS:
            errors.append(
                FieldError(
                    "branding",
                    f"Unknown branding key {key!r}: use {', '.join(BRANDING_KEYS)}",
                    ErrorCode.INVALID_INPUT,
                )
            )
        elif not isinstance(value, str) or len(value) > 2048:
            errors.append(
                FieldError(
                    "branding", f"branding.{key} is text of at most 2048 characters", ErrorCode.INVALID_INPUT
                )
            )
        elif key == "accentColor" and not _COLOR.fullmatch(value):
            errors.append(
                FieldError(
                    "branding", "branding.accentColor is a colour like #1a73e8", ErrorCode.INVALID_INPUT
                )
            )
        elif key == "logoUrl" and not value.startswith("https://"):
            errors.append(FieldError("branding", "branding.logoUrl is an https URL", ErrorCode.INVALID_INPUT))


async def _slug_taken(session: AsyncSession, slug: str, *, other_than: int | None = None) -> bool:
    query = select(Workspace.id).where(Workspace.slug == slug)
    if other_than is not None:
        query = query.where(Workspace.id != other_than)
    return (await session.execute(query)).first() is not None


async def create_workspace(session: AsyncSession, data: WorkspaceInput) -> Workspace:
    errors: list[FieldError] = []
    _check(errors, data, creating=True)
    raise_if(errors)
    assert data.name is not None and data.slug is not None
    with all_workspaces():
        if await _slug_taken(session, data.slug):
            raise DomainError.single(
                ErrorCode.DUPLICATE_SLUG, f"A workspace with slug {data.slug!r} exists", "slug"
            )
        row = Workspace(
            name=data.name.strip(),
            slug=data.slug,
            public_url=data.public_url,
            branding=dict(data.branding or {}),
            quota_subscribers=data.quota_subscribers,
            quota_emails_per_day=data.quota_emails_per_day,
        )
        session.add(row)
        await session.flush()
    return row


async def get_workspace(session: AsyncSession, workspace_id: int) -> Workspace:
    with all_workspaces():
        row = await session.get(Workspace, workspace_id)
    if row is None:
        raise NotFound("Workspace", code=ErrorCode.WORKSPACE_NOT_FOUND)
    return row


async def update_workspace(session: AsyncSession, workspace_id: int, data: WorkspaceInput) -> Workspace:
    errors: list[FieldError] = []
    _check(errors, data, creating=False)
    raise_if(errors)
    row = await get_workspace(session, workspace_id)
    with all_workspaces():
        if data.slug is not None and data.slug != row.slug:
            if await _slug_taken(session, data.slug, other_than=row.id):
                raise DomainError.single(
                    ErrorCode.DUPLICATE_SLUG, f"A workspace with slug {data.slug!r} exists", "slug"
                )
            row.slug = data.slug
        if data.name is not None:
            row.name = data.name.strip()
        if "public_url" in data.given:
            row.public_url = data.public_url
        if data.branding is not None:
            row.branding = dict(data.branding)
        if "quota_subscribers" in data.given:
            row.quota_subscribers = data.quota_subscribers
        if "quota_emails_per_day" in data.given:
            row.quota_emails_per_day = data.quota_emails_per_day
        await session.flush()
    return row


async def archive_workspace(session: AsyncSession, workspace_id: int) -> Workspace:
    """Archived: its keys stop authenticating, nothing of it is started or sent, its public pages are gone.
    An instance key can still read it (and export) by naming it."""
    row = await get_workspace(session, workspace_id)
    if row.id == DEFAULT_WORKSPACE_ID:
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            "The default workspace holds keys made without --workspace; it stays",
            "id",
        )
    if row.status is WorkspaceStatus.ARCHIVED:
        return row
    with all_workspaces():
        row.status = WorkspaceStatus.ARCHIVED
        row.archived_at = utcnow()
        await session.flush()
    return row


async def find_workspaces(session: AsyncSession, *, first: int, after: int | None) -> Page[Workspace]:
    with all_workspaces():
        return await keyset_page(session, select(Workspace), Workspace.id, first=first, after=after)


async def workspace_by_reference(session: AsyncSession, reference: str) -> Workspace | None:
    """A workspace by numeric id or slug (the header's forms besides a global id, decoded by the caller)."""
    with all_workspaces():
        if reference.isdigit() and len(reference) <= 18:
            return await session.get(Workspace, int(reference))
        if _SLUG.fullmatch(reference):
            return (
                await session.execute(select(Workspace).where(Workspace.slug == reference))
            ).scalar_one_or_none()
    return None


async def acting_workspace(session: AsyncSession, principal: Principal, requested: int | None) -> int | None:
    """The workspace a request acts in: the key's own; for an instance key the one it names, else none (only
    workspace management then). A workspace key naming another workspace is refused, never redirected."""
    if principal.role is not Role.OWNER:
        if requested is not None and requested != principal.workspace_id:
            raise WrongWorkspace("this API key belongs to another workspace")
        return principal.workspace_id
    if requested is None:
        return None
    with all_workspaces():
        found = await session.get(Workspace, requested)
    if found is None:
        raise WrongWorkspace("no such workspace")
    return found.id
