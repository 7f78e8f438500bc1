"""The public archive of a workspace's campaigns: which ones it lists, and each rendered for anyone to read.

A campaign is listed when it is marked ``archive`` and has gone out: FINISHED, or RUNNING with mail sent. It is
rendered with placeholder subscriber data (the campaign's ``archive_data`` over neutral defaults), never with a
real subscriber's, and without any tracking: no open pixel, links as written, and ``unsubscribe_url`` and
``webview_url`` both lead to the archived copy itself, so nobody's token is ever published.

Runs inside the workspace's scope: the session filters every statement by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.content import ContentFormat, Template
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.domain.content.rendering import (
    RenderedContent,
    campaign_vars,
    compile_content,
    template_context,
)
from emailkit.domain.errors import DomainError, ErrorCode, FieldError

PAGE_SIZE: Final = 20
FEED_SIZE: Final = 20
# Page numbers past this are answered 404 rather than running an ever larger OFFSET.
MAX_PAGE: Final = 1000
ARCHIVE_DATA_KEYS: Final = ("name", "email", "attributes")
MAX_ARCHIVE_DATA: Final = 16 * 1024
DEFAULT_NAME: Final = "Subscriber"
# A reserved domain (RFC 2606): a template that shows the address shows nobody's.
DEFAULT_EMAIL: Final = "subscriber@example.com"


def archive_subscriber(data: dict[str, Any] | None) -> dict[str, Any]:
    """The ``subscriber`` an archived copy is rendered for: the campaign's ``archive_data`` over defaults."""
    data = data or {}
    attributes = data.get("attributes")
    return {
        "id": 0,
        "email": data.get("email") or DEFAULT_EMAIL,
        "name": data.get("name") or DEFAULT_NAME,
        "attributes": dict(attributes) if isinstance(attributes, dict) else {},
        "status": "ENABLED",
    }


def check_archive_data(errors: list[FieldError], data: Any) -> None:
    """``archiveData``: an object with ``name`` and ``email`` (text) and ``attributes`` (an object), all optional."""

    def problem(message: str) -> None:
        errors.append(FieldError("archiveData", message, ErrorCode.INVALID_INPUT))

    if data is None:
        return
    if not isinstance(data, dict):
        problem("archiveData is an object: {name, email, attributes}")
        return
    unknown = sorted(set(data) - set(ARCHIVE_DATA_KEYS))
    if unknown:
        problem(f"Unknown archiveData keys {', '.join(unknown)}: use {', '.join(ARCHIVE_DATA_KEYS)}")
    for key in ("name", "email"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problem(f"archiveData.{key} is text")
    if data.get("attributes") is not None and not isinstance(data["attributes"], dict):
        problem("archiveData.attributes is an object")
    if len(json.dumps(data, default=str)) > MAX_ARCHIVE_DATA:
        problem(f"archiveData is at most {MAX_ARCHIVE_DATA // 1024} KiB of JSON")


def _published() -> ColumnElement[bool]:
    sent = or_(
        Campaign.status == CampaignStatus.FINISHED,
        and_(Campaign.status == CampaignStatus.RUNNING, Campaign.sent_count > 0),
    )
    return and_(Campaign.archive, sent)


@dataclass(frozen=True)
class ArchivePage:
    campaigns: list[Campaign]
    has_next: bool


async def archive_page(session: AsyncSession, page: int, *, size: int = PAGE_SIZE) -> ArchivePage:
    """The workspace's archived campaigns, newest send first, page `page` (from 1)."""
    rows = list(
        (
            await session.execute(
                select(Campaign)
                .where(_published())
                .order_by(Campaign.started_at.desc(), Campaign.id.desc())
                .offset((page - 1) * size)
                .limit(size + 1)
            )
        ).scalars()
    )
    return ArchivePage(rows[:size], len(rows) > size)


async def archived_campaign(session: AsyncSession, campaign_id: int) -> Campaign | None:
    """The campaign when it is in the archive; None otherwise (not archived, not sent, another workspace's)."""
    found = await session.execute(select(Campaign).where(Campaign.id == campaign_id, _published()))
    return found.scalar_one_or_none()


async def templates_of(session: AsyncSession, campaigns: Sequence[Campaign]) -> dict[int, Template]:
    """The templates the campaigns take their body from, by id (one query)."""
    ids = {c.template_id for c in campaigns if c.template_id is not None}
    if not ids:
        return {}
    rows = await session.execute(select(Template).where(Template.id.in_(ids)))
    return {t.id: t for t in rows.scalars()}


def content_version(campaign: Campaign, template: Template | None) -> str:
    """Changes whenever what the archived copy shows may have: the campaign (its content, subject,
    archive_data, status) or the template it uses was written."""
    parts = [str(campaign.id), campaign.updated_at.isoformat()]
    if template is not None:
        parts.append(template.updated_at.isoformat())
    return ":".join(parts)


def versions_digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _context(campaign: Campaign, page_url: str) -> dict[str, Any]:
    return template_context(
        subscriber=archive_subscriber(campaign.archive_data),
        campaign=campaign_vars(campaign),
        unsubscribe_url=page_url,
        webview_url=page_url,
    )


def render_archived(campaign: Campaign, template: Template | None, page_url: str) -> RenderedContent:
    """The archived copy (subject, HTML, text) as anyone may read it; `page_url` is its public address.

    Raises DomainError when the content does not compile or render with the placeholder data. CPU work bounded
    by the render limits: call it off the event loop.
    """
    body, fmt = campaign.body, campaign.format
    if campaign.template_id is not None:
        if template is None:
            raise DomainError.single(
                ErrorCode.TEMPLATE_NOT_FOUND, "The campaign's template is gone", "templateId"
            )
        body, fmt = template.body, template.format
    content = compile_content(
        body or "", fmt or ContentFormat.HTML, subject=campaign.subject, plain_text=campaign.plain_text
    )
    return content.render(_context(campaign, page_url))


def archived_subject(campaign: Campaign, page_url: str) -> str:
    """Only the subject, as the list shows it: compiled alone, not with the whole body, and only when it holds
    Jinja code (most subjects are plain text)."""
    if "{" not in campaign.subject:
        return " ".join(campaign.subject.split())
    content = compile_content("", ContentFormat.HTML, subject=campaign.subject)
    return content.render(_context(campaign, page_url)).subject
