"""Campaigns: definition and target lists (sending lives in the sending modules)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus
from emailkit.domain.audience.lists import require_lists
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.content.rendering import validate_content, validate_plain_text
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.senders.store import require_sender
from emailkit.domain.sending.ab import definition as ab
from emailkit.domain.sending.archive import check_archive_data
from emailkit.domain.validation import check_length, normalize_email, raise_if, require

EDITABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED})
# An A/B test is fixed once the campaign starts: the split has been made and recorded by then.
AB_EDITABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED})
MAX_LISTS = 200
MAX_BODY = 1_000_000
MAX_PLAIN_TEXT = 200_000


@dataclass
class CampaignInput:
    """Fields of a campaign definition; on update, None means "leave as it is"."""

    name: str | None = None
    subject: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    # An empty string clears the optional texts on update.
    reply_to: str | None = None
    list_ids: Sequence[int] | None = None
    segment_ids: Sequence[int] | None = None
    template_id: int | None = None
    body: str | None = None
    format: ContentFormat | None = None
    plain_text: str | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    # Web view and public archive (emailkit.domain.sending.archive). archive_data is JSON as the caller gave it
    # (checked by check_archive_data); an empty object resets it.
    web_view_link: bool | None = None
    archive: bool | None = None
    archive_data: Any = None
    # An A/B test: 2-5 variants (on update an empty list removes the test) and how they are tested.
    variants: Sequence[ab.VariantInput] | None = None
    ab_test: ab.AbTestInput | None = None
    # The sender it goes through (emailkit.domain.senders.precedence); on update 0 removes it.
    sender_id: int | None = None


# What may change on a campaign in any status: publishing it in the archive does not touch what was sent.
PUBLISHING = frozenset({"archive", "archive_data"})


def _publishing_only(data: CampaignInput) -> bool:
    return all(getattr(data, f.name) is None for f in fields(data) if f.name not in PUBLISHING)


def _check_header_text(errors: list[FieldError], field: str, value: str | None) -> None:
    # Subject and display name end up in message headers: a line break there is header injection.
    if value is not None and ("\r" in value or "\n" in value):
        errors.append(FieldError(field, "Must be a single line", ErrorCode.INVALID_INPUT))


def _validate_fields(data: CampaignInput, *, creating: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if creating or data.name is not None:
        require(errors, "name", data.name, "Name")
    if creating or data.subject is not None:
        require(errors, "subject", data.subject, "Subject")
    check_length(errors, "name", data.name, 255)
    check_length(errors, "subject", data.subject, 998)
    check_length(errors, "fromName", data.from_name, 255)
    check_length(errors, "body", data.body, MAX_BODY)
    check_length(errors, "plainText", data.plain_text, MAX_PLAIN_TEXT)
    _check_header_text(errors, "subject", data.subject)
    _check_header_text(errors, "fromName", data.from_name)
    if data.list_ids is not None and len(set(data.list_ids)) > MAX_LISTS:
        errors.append(FieldError("listIds", f"At most {MAX_LISTS} lists", ErrorCode.INVALID_INPUT))
    if data.template_id is not None and data.body is not None:
        errors.append(
            FieldError("templateId", "Give either templateId or body, not both", ErrorCode.INVALID_INPUT)
        )
    if data.template_id is not None and data.format is not None:
        errors.append(
            FieldError("format", "format goes with body, not with templateId", ErrorCode.INVALID_INPUT)
        )
    if creating and data.template_id is None and data.body is None:
        errors.append(FieldError("templateId", "Give either templateId or body", ErrorCode.REQUIRED))
    if creating and data.body is not None and data.template_id is None and data.format is None:
        errors.append(FieldError("format", "format is required with body", ErrorCode.REQUIRED))
    check_archive_data(errors, data.archive_data)
    return errors


def _emails(data: CampaignInput, errors: list[FieldError]) -> tuple[str | None, str | None]:
    """Normalised fromEmail and replyTo ("" when replyTo is being cleared), collecting problems."""
    from_email = reply_to = None
    if data.from_email is not None:
        try:
            from_email = normalize_email(data.from_email, "fromEmail")
        except DomainError as exc:
            errors.extend(exc.errors)
    if data.reply_to is not None:
        if not data.reply_to.strip():
            reply_to = ""
        else:
            try:
                reply_to = normalize_email(data.reply_to, "replyTo")
            except DomainError as exc:
                errors.extend(exc.errors)
    return from_email, reply_to


async def _require_campaign_template(session: AsyncSession, template_id: int) -> Template:
    template = await session.get(Template, template_id)
    if template is None:
        raise NotFound("Template", field="templateId", code=ErrorCode.TEMPLATE_NOT_FOUND)
    if template.kind is not TemplateKind.CAMPAIGN:
        raise DomainError.single(
            ErrorCode.INVALID_INPUT,
            f"Template {template.name!r} is a {template.kind.value} template; campaigns need a CAMPAIGN one",
            "templateId",
        )
    return template


def _collect(errors: list[FieldError], check: Callable[[], None]) -> None:
    try:
        check()
    except DomainError as exc:
        errors.extend(exc.errors)


async def _validate_content(session: AsyncSession, row: Campaign) -> None:
    """Check subject, body and text alternative as the send pipeline compiles them; report every problem."""
    errors: list[FieldError] = []
    subject, plain_text = row.subject, row.plain_text
    if row.template_id is None:
        body, fmt, field = row.body, row.format, "body"
        assert body is not None and fmt is not None
    else:
        # The subject is compiled together with the template's body, so check them as the pair they form.
        template = await session.get(Template, row.template_id)
        assert template is not None
        body, fmt, field = template.body, template.format, "templateId"

    def check() -> None:
        _collect(errors, lambda: validate_content(body, fmt, subject=subject, field=field))
        if plain_text is not None:
            _collect(errors, lambda: validate_plain_text(plain_text, field="plainText"))

    # Sample renders are CPU work bounded only by the render limits: keep the event loop answering meanwhile.
    await asyncio.to_thread(check)
    raise_if(errors)


async def _replace_lists(session: AsyncSession, campaign_id: int, list_ids: Sequence[int]) -> None:
    wanted = set(list_ids)
    current = set(
        (
            await session.execute(select(CampaignList.list_id).where(CampaignList.campaign_id == campaign_id))
        ).scalars()
    )
    gone = current - wanted
    if gone:
        await session.execute(
            delete(CampaignList).where(
                CampaignList.campaign_id == campaign_id, CampaignList.list_id.in_(gone)
            )
        )
    new = sorted(wanted - current)
    if new:
        await session.execute(insert(CampaignList), [{"campaign_id": campaign_id, "list_id": i} for i in new])


async def create_campaign(session: AsyncSession, data: CampaignInput) -> Campaign:
    errors = _validate_fields(data, creating=True)
    from_email, reply_to = _emails(data, errors)
    if data.from_email is None:
        errors.append(FieldError("fromEmail", "From address is required", ErrorCode.REQUIRED))
    errors.extend(ab.check_inputs(data.variants, data.ab_test, has_test=False))
    raise_if(errors)
    assert data.name is not None and data.subject is not None and from_email is not None
    await require_lists(session, sorted(set(data.list_ids or [])))
    await segments.require_segments(session, data.segment_ids or [])
    if data.template_id is not None:
        await _require_campaign_template(session, data.template_id)
    if data.sender_id:
        await require_sender(session, data.sender_id)
    row = Campaign(
        name=data.name.strip(),
        subject=data.subject.strip(),
        status=CampaignStatus.DRAFT,
        from_email=from_email,
        from_name=(data.from_name or "").strip(),
        reply_to=reply_to or None,
        template_id=data.template_id,
        body=data.body if data.template_id is None else None,
        format=data.format if data.template_id is None else None,
        plain_text=data.plain_text or None,
        track_opens=True if data.track_opens is None else data.track_opens,
        track_clicks=True if data.track_clicks is None else data.track_clicks,
        web_view_link=bool(data.web_view_link),
        archive=bool(data.archive),
        archive_data=data.archive_data or None,
        sender_id=data.sender_id or None,
    )
    await _validate_content(session, row)
    session.add(row)
    await session.flush()
    await _replace_lists(session, row.id, data.list_ids or [])
    await segments.replace_campaign_segments(session, row.id, data.segment_ids or [])
    if data.variants:
        await ab.save(session, row.id, data.variants, data.ab_test)
        await ab.validate_variants(session, row)
    return row


async def get_campaign(session: AsyncSession, campaign_id: int, *, for_update: bool = False) -> Campaign:
    row = await session.get(Campaign, campaign_id, with_for_update=for_update)
    if row is None:
        raise NotFound("Campaign", code=ErrorCode.CAMPAIGN_NOT_FOUND)
    return row


async def update_campaign(session: AsyncSession, campaign_id: int, data: CampaignInput) -> Campaign:
    errors = _validate_fields(data, creating=False)
    from_email, reply_to = _emails(data, errors)
    raise_if(errors)
    # The row lock makes the status check and the edit atomic against a concurrent start (on PostgreSQL).
    row = await get_campaign(session, campaign_id, for_update=True)
    if row.status not in EDITABLE and not _publishing_only(data):
        raise DomainError.single(
            ErrorCode.INVALID_STATE, f"A {row.status.value} campaign can no longer be edited", "id"
        )
    await _require_new_targets(session, row, data)
    if data.sender_id is not None:
        if data.sender_id:
            await require_sender(session, data.sender_id)
        row.sender_id = data.sender_id or None
    has_test = await _check_ab_edit(session, row, data)
    await _set_content(session, row, data)
    _set_fields(row, data, from_email, reply_to)
    content_changed = any(
        v is not None for v in (data.subject, data.body, data.format, data.template_id, data.plain_text)
    )
    if content_changed:
        await _validate_content(session, row)
    if data.variants is not None or data.ab_test is not None:
        await ab.save(session, row.id, data.variants, data.ab_test)
    if (has_test and (content_changed or data.from_name is not None)) or data.variants:
        # What the variants take from the campaign may have changed with it.
        await ab.validate_variants(session, row)
    if data.list_ids is not None:
        await _replace_lists(session, row.id, data.list_ids)
    if data.segment_ids is not None:
        await segments.replace_campaign_segments(session, row.id, data.segment_ids)
    await session.flush()
    return row


async def _check_ab_edit(session: AsyncSession, row: Campaign, data: CampaignInput) -> bool:
    """Whether the campaign has an A/B test; refuses changes to it once the campaign has started."""
    has_test = await ab.test_of(session, row.id) is not None
    if data.variants is None and data.ab_test is None:
        return has_test
    if row.status not in AB_EDITABLE:
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            f"The A/B test of a {row.status.value} campaign can no longer change",
            "variants" if data.variants is not None else "abTest",
        )
    raise_if(ab.check_inputs(data.variants, data.ab_test, has_test=has_test))
    return has_test


async def _require_new_targets(session: AsyncSession, row: Campaign, data: CampaignInput) -> None:
    if data.list_ids is not None:
        await require_lists(session, sorted(set(data.list_ids)))
    if data.segment_ids is not None:
        if row.started_at is not None:
            # The segment definitions were recorded at start; the running send keeps using them.
            raise DomainError.single(
                ErrorCode.INVALID_STATE, "The segments of a started campaign cannot change", "segmentIds"
            )
        await segments.require_segments(session, data.segment_ids)


async def _set_content(session: AsyncSession, row: Campaign, data: CampaignInput) -> None:
    """A template, or an inline body and format (either may be left as it was)."""
    if data.template_id is not None:
        await _require_campaign_template(session, data.template_id)
        row.template_id, row.body, row.format = data.template_id, None, None
    elif data.body is not None or data.format is not None:
        body = data.body if data.body is not None else row.body
        fmt = data.format or row.format
        if body is None:
            raise DomainError.single(ErrorCode.REQUIRED, "body is required with format", "body")
        if fmt is None:
            raise DomainError.single(ErrorCode.REQUIRED, "format is required with body", "format")
        row.template_id, row.body, row.format = None, body, fmt


def _set_fields(row: Campaign, data: CampaignInput, from_email: str | None, reply_to: str | None) -> None:
    if data.name is not None:
        row.name = data.name.strip()
    if data.subject is not None:
        row.subject = data.subject.strip()
    if from_email is not None:
        row.from_email = from_email
    if data.from_name is not None:
        row.from_name = data.from_name.strip()
    if reply_to is not None:
        row.reply_to = reply_to or None
    if data.plain_text is not None:
        row.plain_text = data.plain_text or None
    if data.track_opens is not None:
        row.track_opens = data.track_opens
    if data.track_clicks is not None:
        row.track_clicks = data.track_clicks
    if data.web_view_link is not None:
        row.web_view_link = data.web_view_link
    if data.archive is not None:
        row.archive = data.archive
    if data.archive_data is not None:
        row.archive_data = data.archive_data or None


async def delete_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    row = await get_campaign(session, campaign_id, for_update=True)
    if row.status is CampaignStatus.RUNNING:
        raise DomainError.single(
            ErrorCode.INVALID_STATE, "Pause or cancel the campaign before deleting it", "id"
        )
    # Target lists (and anything the send pipeline recorded) go with it through ON DELETE CASCADE.
    await session.delete(row)
    await session.flush()
    return row


async def find_campaigns(
    session: AsyncSession, *, first: int, after: int | None, status: CampaignStatus | None = None
) -> Page[Campaign]:
    """Newest first, the order a dashboard lists them in."""
    stmt = select(Campaign)
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    return await keyset_page(session, stmt, Campaign.id, first=first, after=after, descending=True)


async def campaigns_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Campaign]:
    rows = (await session.execute(select(Campaign).where(Campaign.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}


async def list_ids_by_campaign(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, list[int]]:
    stmt = (
        select(CampaignList.campaign_id, CampaignList.list_id)
        .where(CampaignList.campaign_id.in_(campaign_ids))
        .order_by(CampaignList.campaign_id, CampaignList.list_id)
    )
    out: dict[int, list[int]] = defaultdict(list)
    for cid, lid in (await session.execute(stmt)).all():
        out[cid].append(lid)
    return out
