"""The Workspace type: a tenant, its public settings and its quotas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from emailkit.db.tables.tenancy import Workspace as WorkspaceRow
from emailkit.db.tables.tenancy import WorkspaceStatus
from emailkit.schema.relay import to_global_id

strawberry.enum(WorkspaceStatus, name="WorkspaceStatus")


@strawberry.type(description="What the workspace's public pages (archive, unsubscribe, preferences) show.")
class WorkspaceBranding:
    name: str | None = strawberry.field(
        description="Shown as the sender's name; default: the workspace name."
    )
    logo_url: str | None
    accent_color: str | None = strawberry.field(description="A colour like #1a73e8.")
    footer: str | None


@strawberry.type(description="Limits of the workspace; null: none.")
class WorkspaceQuotas:
    subscribers: int | None = strawberry.field(
        description="Subscribers at most; adding more is refused with QUOTA_EXCEEDED."
    )
    emails_per_day: int | None = strawberry.field(
        description=(
            "Campaign emails per UTC day at most; a campaign that reaches it pauses until the next day and "
            "says so in statusReason. Transactional mail is not counted."
        )
    )


@strawberry.type(
    name="Workspace", description="A tenant: every list, subscriber, campaign and event belongs to one."
)
class WorkspaceType:
    id: strawberry.ID = strawberry.field(
        description="Also what an instance key sends in X-Emailkit-Workspace to act inside it."
    )
    name: str
    slug: str = strawberry.field(description="Part of public URLs: /archive/<slug>.")
    status: WorkspaceStatus
    public_url: str | None = strawberry.field(
        description="Base URL of its public pages and mail links; null: the instance's EMAILKIT_PUBLIC_URL."
    )
    branding: WorkspaceBranding
    quotas: WorkspaceQuotas
    created_at: datetime
    archived_at: datetime | None

    @classmethod
    def from_model(cls, row: WorkspaceRow) -> WorkspaceType:
        branding: dict[str, Any] = row.branding or {}
        return cls(
            id=to_global_id("Workspace", row.id),
            name=row.name,
            slug=row.slug,
            status=row.status,
            public_url=row.public_url,
            branding=WorkspaceBranding(
                name=branding.get("name"),
                logo_url=branding.get("logoUrl"),
                accent_color=branding.get("accentColor"),
                footer=branding.get("footer"),
            ),
            quotas=WorkspaceQuotas(
                subscribers=row.quota_subscribers, emails_per_day=row.quota_emails_per_day
            ),
            created_at=row.created_at,
            archived_at=row.archived_at,
        )
