"""The variants and settings of a campaign's A/B test, as createCampaign and updateCampaign give them: checked
(each variant's content as strictly as the campaign's own) and stored.

Fields of problems name the input: ``variants``, ``variants[1].subject``, ``abTest.testShare``.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import AbMetric, Campaign, CampaignAbTest, CampaignVariant
from emailkit.domain.content.rendering import validate_content
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.sending.ab.content import VariantContent, content_of, label
from emailkit.domain.validation import check_length, raise_if

MIN_VARIANTS = 2
MAX_VARIANTS = 5
# Long enough for a first wave of opens, short enough that the rest of the audience still gets a timely mail.
MIN_WAIT_SECONDS = 60
MAX_WAIT_SECONDS = 30 * 24 * 3600
MAX_BODY = 1_000_000


@dataclass
class VariantInput:
    """What a variant changes; None keeps the campaign's (an empty fromName is a change: no display name)."""

    subject: str | None = None
    from_name: str | None = None
    body: str | None = None
    format: ContentFormat | None = None
    template_id: int | None = None


@dataclass
class AbTestInput:
    test_share: float
    metric: AbMetric
    wait_seconds: int


def _single_line(errors: list[FieldError], field: str, value: str | None) -> None:
    # Subject and display name end up in message headers: a line break there is header injection.
    if value is not None and ("\r" in value or "\n" in value):
        errors.append(FieldError(field, "Must be a single line", ErrorCode.INVALID_INPUT))


def _check_variant(errors: list[FieldError], i: int, v: VariantInput) -> None:
    at = f"variants[{i}]"
    if v.subject is not None and not v.subject.strip():
        errors.append(
            FieldError(f"{at}.subject", "Leave subject out to keep the campaign's", ErrorCode.REQUIRED)
        )
    check_length(errors, f"{at}.subject", v.subject, 998)
    check_length(errors, f"{at}.fromName", v.from_name, 255)
    check_length(errors, f"{at}.body", v.body, MAX_BODY)
    _single_line(errors, f"{at}.subject", v.subject)
    _single_line(errors, f"{at}.fromName", v.from_name)
    if v.template_id is not None and v.body is not None:
        errors.append(
            FieldError(
                f"{at}.templateId", "Give either templateId or body, not both", ErrorCode.INVALID_INPUT
            )
        )
    if v.format is not None and v.body is None:
        errors.append(FieldError(f"{at}.format", "format goes with body", ErrorCode.INVALID_INPUT))
    if v.body is not None and v.format is None:
        errors.append(FieldError(f"{at}.format", "format is required with body", ErrorCode.REQUIRED))


def _check_settings(errors: list[FieldError], ab: AbTestInput) -> None:
    if not 0 < ab.test_share <= 1:
        errors.append(
            FieldError(
                "abTest.testShare",
                "testShare is the fraction of the audience that tests the variants: more than 0, at most 1",
                ErrorCode.OUT_OF_RANGE,
            )
        )
    if not MIN_WAIT_SECONDS <= ab.wait_seconds <= MAX_WAIT_SECONDS:
        errors.append(
            FieldError(
                "abTest.waitSeconds",
                f"waitSeconds must be from {MIN_WAIT_SECONDS} to {MAX_WAIT_SECONDS} (30 days)",
                ErrorCode.OUT_OF_RANGE,
            )
        )


def check_inputs(
    variants: Sequence[VariantInput] | None, ab_test: AbTestInput | None, *, has_test: bool
) -> list[FieldError]:
    """Problems of the input alone. An empty `variants` removes the test; `has_test`: the campaign has one."""
    errors: list[FieldError] = []
    if variants is not None and not variants:
        if ab_test is not None:
            errors.append(
                FieldError(
                    "abTest", "An A/B test needs variants (an empty list removes it)", ErrorCode.INVALID_INPUT
                )
            )
        return errors
    if variants is not None:
        if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
            errors.append(
                FieldError(
                    "variants",
                    f"An A/B test compares {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {len(variants)}",
                    ErrorCode.VARIANT_COUNT,
                )
            )
        for i, v in enumerate(variants[:MAX_VARIANTS]):
            _check_variant(errors, i, v)
        if ab_test is None and not has_test:
            errors.append(
                FieldError("abTest", "Say how the variants are tested (abTest)", ErrorCode.REQUIRED)
            )
    elif ab_test is not None and not has_test:
        errors.append(FieldError("variants", "Give the variants the test compares", ErrorCode.REQUIRED))
    if ab_test is not None:
        _check_settings(errors, ab_test)
    return errors


async def _require_templates(session: AsyncSession, variants: Sequence[VariantInput]) -> None:
    wanted = {v.template_id for v in variants if v.template_id is not None}
    if not wanted:
        return
    found = {
        t.id: t for t in (await session.execute(select(Template).where(Template.id.in_(wanted)))).scalars()
    }
    errors: list[FieldError] = []
    for i, v in enumerate(variants):
        if v.template_id is None:
            continue
        template = found.get(v.template_id)
        if template is None:
            errors.extend(
                NotFound(
                    "Template", field=f"variants[{i}].templateId", code=ErrorCode.TEMPLATE_NOT_FOUND
                ).errors
            )
        elif template.kind is not TemplateKind.CAMPAIGN:
            errors.append(
                FieldError(
                    f"variants[{i}].templateId",
                    f"Template {template.name!r} is a {template.kind.value} template; campaigns need a CAMPAIGN one",
                    ErrorCode.INVALID_INPUT,
                )
            )
    raise_if(errors)


async def variants_of(session: AsyncSession, campaign_id: int) -> list[CampaignVariant]:
    stmt = (
        select(CampaignVariant)
        .where(CampaignVariant.campaign_id == campaign_id)
        .order_by(CampaignVariant.position)
    )
    return list((await session.execute(stmt)).scalars())


async def variants_by_campaign(
    session: AsyncSession, campaign_ids: Collection[int]
) -> dict[int, list[CampaignVariant]]:
    stmt = (
        select(CampaignVariant)
        .where(CampaignVariant.campaign_id.in_(list(campaign_ids)))
        .order_by(CampaignVariant.campaign_id, CampaignVariant.position)
    )
    out: dict[int, list[CampaignVariant]] = defaultdict(list)
    for row in (await session.execute(stmt)).scalars():
        out[row.campaign_id].append(row)
    return out


async def variants_by_ids(session: AsyncSession, ids: Collection[int]) -> dict[int, CampaignVariant]:
    stmt = select(CampaignVariant).where(CampaignVariant.id.in_(list(ids)))
    return {row.id: row for row in (await session.execute(stmt)).scalars()}


async def tests_by_campaign(
    session: AsyncSession, campaign_ids: Collection[int]
) -> dict[int, CampaignAbTest]:
    stmt = select(CampaignAbTest).where(CampaignAbTest.campaign_id.in_(list(campaign_ids)))
    return {row.campaign_id: row for row in (await session.execute(stmt)).scalars()}


async def test_of(session: AsyncSession, campaign_id: int) -> CampaignAbTest | None:
    stmt = select(CampaignAbTest).where(CampaignAbTest.campaign_id == campaign_id)
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def save(
    session: AsyncSession,
    campaign_id: int,
    variants: Sequence[VariantInput] | None,
    ab_test: AbTestInput | None,
) -> None:
    """Replace the variants (an empty list removes the test) and the settings given; checked inputs only."""
    if variants is not None:
        await _require_templates(session, variants)
        await session.execute(delete(CampaignVariant).where(CampaignVariant.campaign_id == campaign_id))
        if not variants:
            await session.execute(delete(CampaignAbTest).where(CampaignAbTest.campaign_id == campaign_id))
            return
        session.add_all(
            CampaignVariant(
                campaign_id=campaign_id,
                position=i,
                subject=v.subject.strip() if v.subject is not None else None,
                from_name=v.from_name.strip() if v.from_name is not None else None,
                template_id=v.template_id,
                body=v.body if v.template_id is None else None,
                format=v.format if v.template_id is None else None,
                sent_count=0,
            )
            for i, v in enumerate(variants)
        )
    if ab_test is not None:
        row = await test_of(session, campaign_id)
        if row is None:
            row = CampaignAbTest(campaign_id=campaign_id)
            session.add(row)
        row.test_share = float(ab_test.test_share)
        row.metric = ab_test.metric
        row.wait_seconds = int(ab_test.wait_seconds)
    await session.flush()


async def _body_of(session: AsyncSession, content: VariantContent) -> tuple[str, ContentFormat]:
    if content.template_id is not None:
        template = await session.get(Template, content.template_id)
        assert template is not None
        return template.body, template.format
    assert content.body is not None and content.format is not None
    return content.body, content.format


def _check_compiles(
    errors: list[FieldError], i: int, body: str, fmt: ContentFormat, subject: str, own_field: str
) -> None:
    field = f"variants[{i}].{own_field}"
    try:
        validate_content(body, fmt, subject=subject, field=field)
    except DomainError as exc:
        for e in exc.errors:
            # The subject's problems are reported on "subject": this variant's, or the campaign's it uses.
            where = f"variants[{i}].subject" if e.field == "subject" else e.field
            errors.append(FieldError(where, e.message, e.code))


async def validate_variants(session: AsyncSession, campaign: Campaign) -> None:
    """Check what each variant sends as the send pipeline compiles it, and that no two send the same.

    Run after the campaign's own content passed its checks: what a variant takes from the campaign is then
    known to compile, so every problem reported here is the variant's own."""
    variants = await variants_of(session, campaign.id)
    errors: list[FieldError] = []
    checks: list[Callable[[], None]] = []
    seen: dict[tuple[object, ...], int] = {}
    for i, variant in enumerate(variants):
        content = content_of(campaign, variant)
        if (first := seen.setdefault(content.key, i)) != i:
            errors.append(
                FieldError(
                    f"variants[{i}]",
                    f"Variant {label(i)} sends the same as variant {label(first)}: change its subject, fromName "
                    "or content",
                    ErrorCode.DUPLICATE_VARIANT,
                )
            )
        if not content.own_content and variant.subject is None:
            continue  # nothing of its own to compile
        body, fmt = await _body_of(session, content)
        own_field = "templateId" if variant.template_id is not None else "body"
        checks.append(functools.partial(_check_compiles, errors, i, body, fmt, content.subject, own_field))

    def run_checks() -> None:
        for check in checks:
            check()

    # Sample renders are CPU work bounded only by the render limits: keep the event loop answering meanwhile.
    await asyncio.to_thread(run_checks)
    raise_if(sorted(errors, key=lambda e: e.field or ""))
