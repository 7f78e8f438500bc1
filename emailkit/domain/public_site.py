"""What a workspace's public pages show of it (the web view, the archive, the preference centre, the subscribe
and confirmation pages): its branding, slug and public URL, which is also the base of the links it gives out.

Only an ACTIVE workspace has public pages: an archived one's answer 404 like a slug nobody has.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.boundedcache import BoundedLRU
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus

DEFAULT_ACCENT = "#1a73e8"
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Text on white needs this contrast (WCAG AA for body text); a lighter accent colours borders only.
_READABLE_CONTRAST = 4.5


@dataclass(frozen=True)
class PublicSite:
    workspace_id: int
    slug: str
    name: str
    logo_url: str | None
    # Validated #rrggbb: it is written into the pages' CSS.
    accent_color: str
    # The accent when it reads well on white, else a dark grey: the colour of links.
    link_color: str
    footer: str | None
    # Absolute base of the links a page or feed gives out (no trailing slash).
    base_url: str
    created_at: datetime
    # Changes whenever anything above does: part of every page's ETag.
    version: str


def _luminance(color: str) -> float:
    """Relative luminance of #rrggbb (WCAG 2)."""

    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(color[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _readable_on_white(color: str) -> bool:
    return 1.05 / (_luminance(color) + 0.05) >= _READABLE_CONTRAST


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def site_of(row: Workspace, default_base_url: str) -> PublicSite:
    branding = row.branding or {}
    accent = branding.get("accentColor")
    accent = accent if isinstance(accent, str) and _COLOR.fullmatch(accent) else DEFAULT_ACCENT
    logo = _text(branding.get("logoUrl"))
    base_url = (row.public_url or default_base_url).rstrip("/")
    shown = {
        "name": row.name,
        "slug": row.slug,
        "branding": branding,
        "base": base_url,
    }
    return PublicSite(
        workspace_id=row.id,
        slug=row.slug,
        name=_text(branding.get("name")) or row.name,
        # Only https logos (the API checks as much): a page must never load a script's worth of anything else.
        logo_url=logo if logo is not None and logo.startswith("https://") else None,
        accent_color=accent.lower(),
        link_color=accent.lower() if _readable_on_white(accent) else "#1f2328",
        footer=_text(branding.get("footer")),
        base_url=base_url,
        created_at=row.created_at,
        version=hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()[:16],
    )


async def site_by_slug(db: Database, slug: str, default_base_url: str) -> PublicSite | None:
    """The public site at /archive/<slug>; None for an unknown slug or an archived workspace."""
    if not _SLUG.fullmatch(slug):
        return None
    with all_workspaces():
        async with db.read_session() as session:
            row = (
                await session.execute(select(Workspace).where(Workspace.slug == slug))
            ).scalar_one_or_none()
    if row is None or row.status is not WorkspaceStatus.ACTIVE:
        return None
    return site_of(row, default_base_url)


async def site_in_scope(session: AsyncSession, workspace_id: int, default_base_url: str) -> PublicSite | None:
    """The public site of the workspace in scope (a row of its own it may read); None once archived."""
    row = await session.get(Workspace, workspace_id)
    if row is None or row.status is not WorkspaceStatus.ACTIVE:
        return None
    return site_of(row, default_base_url)


class SiteCache:
    """Each workspace's public site as this process last read it, for code that builds a workspace's links
    outside its pages (the confirmation mail), which would otherwise read the workspace row every time.

    An entry is used for at most `max_age` seconds, so a change made through another process shows within that
    time; updateWorkspace through this process forgets the workspace's entry once committed, and a look-up
    that began before that does not put its (possibly stale) answer back.
    """

    def __init__(
        self,
        default_base_url: str,
        *,
        max_age: float = 60.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_base_url = default_base_url
        self.max_age = max_age
        self.clock = clock
        # Weight 1 per entry: a site is small and bounded by max_entries alone.
        self._entries: BoundedLRU[int, tuple[float, PublicSite | None]] = BoundedLRU(
            max_entries=max_entries, max_weight=max_entries
        )
        self._generation = 0

    def forget(self, workspace_id: int) -> None:
        self._entries.discard(workspace_id)
        self._generation += 1

    async def site(self, session: AsyncSession, workspace_id: int) -> PublicSite | None:
        """The site of the workspace in scope (read through `session` when not cached); None once archived."""
        now = self.clock()
        found = self._entries.get(workspace_id)
        if found is not None and now - found[0] < self.max_age:
            return found[1]
        generation = self._generation
        site = await site_in_scope(session, workspace_id, self.default_base_url)
        if generation == self._generation:
            self._entries.put(workspace_id, (now, site), 1)
        return site

    async def base_url(self, session: AsyncSession, workspace_id: int) -> str:
        """The base of the workspace's links: its public URL, else the instance's (also once archived)."""
        site = await self.site(session, workspace_id)
        return self.default_base_url.rstrip("/") if site is None else site.base_url
