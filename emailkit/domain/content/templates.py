"""Templates (MJML or HTML bodies with Jinja2 placeholders): definition, checks and previews."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignStatus, CampaignVariant
from emailkit.domain.audience.subscribers import get_subscriber
from emailkit.domain.content.rendering import (
    RenderedContent,
    compile_content,
    sample_campaign,
    sample_context,
    subscriber_vars,
    validate_content,
)
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.validation import check_length, raise_if, require

MAX_BODY = 1_000_000


@dataclass
class TemplateInput:
    """Fields of a template; on update, None means "leave as it is"."""

    name: str | None = None
    kind: TemplateKind | None = None
    format: ContentFormat | None = None
    subject: str | None = None
    body: str | None = None


@dataclass
class PreviewInput:
    """A saved template (optionally with unsaved edits on top) or a body with its format."""

    template_id: int | None = None
    body: str | None = None
    format: ContentFormat | None = None
    subject: str | None = None
    subscriber_id: int | None = None


def _check_fields(data: TemplateInput, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
    if creating and data.kind is None:
        errors.append(FieldError("kind", "kind is required", ErrorCode.REQUIRED))
    if creating and data.format is None:
        errors.append(FieldError("format", "format is required", ErrorCode.REQUIRED))
    if creating or data.body is not None:
        require(errors, "body", data.body, "Body")
    check_length(errors, "name", data.name, 255)
    check_length(errors, "subject", data.subject, 998)
    check_length(errors, "body", data.body, MAX_BODY)
    # The subject becomes a message header: a line break there would be header injection.
    if data.subject is not None and ("\r" in data.subject or "\n" in data.subject):
        errors.append(FieldError("subject", "Must be a single line", ErrorCode.INVALID_INPUT))
    return errors


async def _check_content(row: Template) -> None:
    errors: list[FieldError] = []
    if row.kind is TemplateKind.TRANSACTIONAL and not row.subject.strip():
        # A campaign brings its own subject; a transactional message has only the template's.
        errors.append(FieldError("subject", "Transactional templates need a subject", ErrorCode.REQUIRED))
    try:
        # Compiling and sample-rendering a large newsletter takes tens of milliseconds: off the event loop.
        await asyncio.to_thread(validate_content, row.body, row.format, subject=row.subject, field="body")
    except DomainError as exc:
        errors.extend(exc.errors)
    raise_if(errors)


async def _campaign_count(session: AsyncSession, template_id: int, *statuses: CampaignStatus) -> int:
    """Campaigns that send the template: as their content, or as the content of an A/B test variant."""
    in_variant = exists().where(
        CampaignVariant.campaign_id == Campaign.id, CampaignVariant.template_id == template_id
    )
    stmt = (
        select(func.count()).select_from(Campaign).where(or_(Campaign.template_id == template_id, in_variant))
    )
    if statuses:
        stmt = stmt.where(Campaign.status.in_(statuses))
    return int((await session.execute(stmt)).scalar_one())


def _campaigns(n: int) -> str:
    return f"{n} campaign{'s' if n != 1 else ''}"


async def create_template(session: AsyncSession, data: TemplateInput) -> Template:
    raise_if(_check_fields(data, creating=True))
    assert data.name is not None and data.kind is not None and data.format is not None
    assert data.body is not None
    row = Template(
        name=data.name.strip(), kind=data.kind, format=data.format, subject=data.subject or "", body=data.body
    )
    await _check_content(row)
    session.add(row)
    await session.flush()
    return row


async def get_template(session: AsyncSession, template_id: int, field: str = "id") -> Template:
    row = await session.get(Template, template_id)
    if row is None:
        raise NotFound("Template", field=field, code=ErrorCode.TEMPLATE_NOT_FOUND)
    return row


async def update_template(session: AsyncSession, template_id: int, data: TemplateInput) -> Template:
    raise_if(_check_fields(data, creating=False))
    row = await get_template(session, template_id)
    content_changes = any(v is not None for v in (data.format, data.subject, data.body))
    if content_changes and (running := await _campaign_count(session, row.id, CampaignStatus.RUNNING)):
        # Recipients of one campaign must all get the same content; pause the campaign to edit it.
        raise DomainError.single(
            ErrorCode.IN_USE, f"The template is being sent by {_campaigns(running)} right now", "id"
        )
    if data.kind is not None and data.kind is not row.kind and data.kind is TemplateKind.TRANSACTIONAL:
        used = await _campaign_count(session, row.id)
        if used:
            raise DomainError.single(
                ErrorCode.IN_USE,
                f"The template is used by {_campaigns(used)}, which need a CAMPAIGN one",
                "kind",
            )
    if data.name is not None:
        row.name = data.name.strip()
    for attr in ("kind", "format", "subject", "body"):
        value = getattr(data, attr)
        if value is not None:
            setattr(row, attr, value)
    if content_changes or data.kind is not None:
        await _check_content(row)
    await session.flush()
    return row


async def delete_template(session: AsyncSession, template_id: int) -> Template:
    row = await get_template(session, template_id)
    used = await _campaign_count(session, row.id)
    if used:
        raise DomainError.single(
            ErrorCode.IN_USE, f"The template is used by {_campaigns(used)}; change or delete them first", "id"
        )
    await session.delete(row)
    await session.flush()
    return row


async def find_templates(
    session: AsyncSession, *, first: int, after: int | None, kind: TemplateKind | None = None
) -> Page[Template]:
    stmt = select(Template)
    if kind is not None:
        stmt = stmt.where(Template.kind == kind)
    return await keyset_page(session, stmt, Template.id, first=first, after=after)


async def templates_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Template]:
    rows = (await session.execute(select(Template).where(Template.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


def _render_preview(
    body: str, fmt: ContentFormat, subject: str, name: str, subscriber: dict[str, Any] | None
) -> RenderedContent:
    context = sample_context(campaign=sample_campaign(name=name, subject=subject))
    if subscriber is not None:
        context["subscriber"] = subscriber
    return compile_content(body, fmt, subject=subject).render(context)


async def preview_template(session: AsyncSession, data: PreviewInput) -> RenderedContent:
    """Render a template for one subscriber (or a realistic sample one); problems come back as errors."""
    errors: list[FieldError] = []
    check_length(errors, "body", data.body, MAX_BODY)
    check_length(errors, "subject", data.subject, 998)
    raise_if(errors)
    name = "Preview"
    body, fmt, subject = data.body, data.format, data.subject
    if data.template_id is not None:
        template = await get_template(session, data.template_id, field="templateId")
        name = template.name
        body = template.body if body is None else body
        fmt = template.format if fmt is None else fmt
        subject = template.subject if subject is None else subject
    if body is None:
        errors.append(FieldError("body", "Give templateId or body", ErrorCode.REQUIRED))
    if fmt is None:
        errors.append(FieldError("format", "format is required with body", ErrorCode.REQUIRED))
    raise_if(errors)
    assert body is not None and fmt is not None
    subscriber = None
    if data.subscriber_id is not None:
        subscriber = subscriber_vars(await _preview_subscriber(session, data.subscriber_id))
    # MJML compilation and rendering are CPU work; keep the event loop serving other requests meanwhile.
    return await asyncio.to_thread(_render_preview, body, fmt, subject or "", name, subscriber)


async def _preview_subscriber(session: AsyncSession, subscriber_id: int) -> Subscriber:
    try:
        return await get_subscriber(session, subscriber_id)
    except NotFound as exc:
        raise DomainError([FieldError("subscriberId", e.message, e.code) for e in exc.errors]) from None
