"""Mutations: createWorkspace, updateWorkspace, archiveWorkspace. Instance (OWNER) keys only."""

from __future__ import annotations

from typing import Any

import strawberry

from emailkit.db.tables.tenancy import Workspace
from emailkit.domain import workspaces
from emailkit.domain.workspaces import WorkspaceInput
from emailkit.schema.context import Info
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import owner_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.workspaces import WorkspaceType


@strawberry.input(description="Set keys replace the branding; leave the input out to keep it.")
class WorkspaceBrandingInput:
    name: str | None = None
    logo_url: str | None = strawberry.field(default=None, description="An https URL.")
    accent_color: str | None = strawberry.field(default=None, description="A colour like #1a73e8.")
    footer: str | None = None


@strawberry.input
class CreateWorkspaceInput:
    name: str
    slug: str = strawberry.field(description="1-63 lower-case letters, digits and inner hyphens; unique.")
    public_url: str | None = None
    branding: WorkspaceBrandingInput | None = None
    quota_subscribers: int | None = None
    quota_emails_per_day: int | None = None


@strawberry.input(description="Fields left out stay as they are; null clears publicUrl and the quotas.")
class UpdateWorkspaceInput:
    id: strawberry.ID
    name: str | None = None
    slug: str | None = None
    public_url: str | None = strawberry.UNSET
    branding: WorkspaceBrandingInput | None = None
    quota_subscribers: int | None = strawberry.UNSET
    quota_emails_per_day: int | None = strawberry.UNSET


@strawberry.input
class ArchiveWorkspaceInput:
    id: strawberry.ID


@strawberry.type
class WorkspacePayload:
    workspace: WorkspaceType | None
    user_errors: list[UserError]


def _branding(value: WorkspaceBrandingInput | None) -> dict[str, Any] | None:
    if value is None:
        return None
    pairs = {
        "name": value.name,
        "logoUrl": value.logo_url,
        "accentColor": value.accent_color,
        "footer": value.footer,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _set(value: Any) -> Any:
    return None if value is strawberry.UNSET else value


def _payload(row: Workspace | None, errors: list[UserError]) -> WorkspacePayload:
    return WorkspacePayload(
        workspace=WorkspaceType.from_model(row) if row is not None else None, user_errors=errors
    )


@strawberry.type
class Mutation:
    @owner_mutation(
        description="Create a workspace; then act inside it by sending its id in X-Emailkit-Workspace."
    )
    async def create_workspace(self, info: Info, input: CreateWorkspaceInput) -> WorkspacePayload:
        data = WorkspaceInput(
            name=input.name,
            slug=input.slug,
            public_url=input.public_url,
            branding=_branding(input.branding),
            quota_subscribers=input.quota_subscribers,
            quota_emails_per_day=input.quota_emails_per_day,
        )
        out = await mutate(info, lambda s: workspaces.create_workspace(s, data))
        return _payload(out.value, out.errors)

    @owner_mutation
    async def update_workspace(self, info: Info, input: UpdateWorkspaceInput) -> WorkspacePayload:
        given = {
            name
            for name, value in (
                ("public_url", input.public_url),
                ("quota_subscribers", input.quota_subscribers),
                ("quota_emails_per_day", input.quota_emails_per_day),
            )
            if value is not strawberry.UNSET
        }
        data = WorkspaceInput(
            name=input.name,
            slug=input.slug,
            public_url=_set(input.public_url),
            branding=_branding(input.branding),
            quota_subscribers=_set(input.quota_subscribers),
            quota_emails_per_day=_set(input.quota_emails_per_day),
            given=frozenset(given),
        )
        workspace_id = decode_id(input.id, "Workspace")
        out = await mutate(info, lambda s: workspaces.update_workspace(s, workspace_id, data))
        if out.value is not None:
            # Its confirmation links follow a new public URL now in this process, elsewhere within a minute.
            info.context.runtime.sites.forget(workspace_id)
        return _payload(out.value, out.errors)

    @owner_mutation(
        description=(
            "Archive a workspace: its keys stop working, its campaigns stop sending (running ones pause with "
            "the reason), and its public pages answer 404. Its data stays; an instance key can still read and "
            "export it by naming it. The default workspace cannot be archived."
        )
    )
    async def archive_workspace(self, info: Info, input: ArchiveWorkspaceInput) -> WorkspacePayload:
        workspace_id = decode_id(input.id, "Workspace")
        out = await mutate(info, lambda s: workspaces.archive_workspace(s, workspace_id))
        if out.value is not None:
            info.context.runtime.principals.forget_all()
            info.context.runtime.sites.forget(workspace_id)
        return _payload(out.value, out.errors)
