"""Workspaces (tenants) and what makes a table tenant data: the ``workspace_id`` every such row carries."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from emailkit.db.scope import current_workspace_id
from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.types import BigInt, BigIntPK, JSONDoc, UTCDateTime

# The workspace the first migration's data moved into, and where keys made without --workspace belong.
DEFAULT_WORKSPACE_ID = 1
DEFAULT_WORKSPACE_SLUG = "default"


class WorkspaceStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    # Read-only: its keys still read, nothing sends, its public pages answer 404.
    ARCHIVED = "ARCHIVED"


class Workspace(TimestampMixin, Base):
    """A tenant: a brand of an agency, a customer of a SaaS. Rows of every area belong to exactly one."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    # The public archive's address: /archive/<slug>.
    slug: Mapped[str] = mapped_column(String(63), nullable=False)
    status: Mapped[WorkspaceStatus] = mapped_column(
        _enum(WorkspaceStatus), nullable=False, default=WorkspaceStatus.ACTIVE
    )
    # Base URL of its public pages and of the links in its mail; None: the instance's EMAILKIT_PUBLIC_URL.
    public_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # What its public pages show: {"name", "logoUrl", "accentColor", "footer"}.
    branding: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    # None: no limit.
    quota_subscribers: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    quota_emails_per_day: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Campaign emails counted against quota_emails_per_day: how many on `usage_day` (UTC).
    usage_day: Mapped[date | None] = mapped_column(Date, nullable=True)
    usage_emails: Mapped[int] = mapped_column(BigInt, nullable=False, default=0)

    __table_args__ = (UniqueConstraint("slug"), AUTOINCREMENT)


def _workspace_in_scope() -> int:
    # An insert that names no workspace takes the one in scope; outside a workspace scope it is refused.
    return current_workspace_id()


class InWorkspace:
    """Mixin of every tenant table: a ``workspace_id`` filled from the scope when an insert names none.

    Tables reached from the API by their own id (``ROOT = True``) reference ``workspaces`` and are indexed by
    (workspace_id, id) for their listings. Child rows (a campaign's deliveries, a subscriber's subscriptions)
    and the feedback loop's hot tables carry the column without a foreign key: their parent already decides
    the workspace, and a per-row reference check would cost every send and every open.
    """

    ROOT: ClassVar[bool] = False

    @declared_attr
    def workspace_id(cls) -> Mapped[int]:
        if cls.__dict__.get("ROOT", False):
            return mapped_column(
                BigInt,
                ForeignKey("workspaces.id", ondelete="RESTRICT"),
                nullable=False,
                default=_workspace_in_scope,
            )
        return mapped_column(BigInt, nullable=False, default=_workspace_in_scope)


def listing_index(table: str) -> Index:
    """The index of a root table's per-workspace listing (keyset pages by id)."""
    return Index(f"ix_{table}_workspace_id_id", "workspace_id", "id")
