"""Templates (MJML or HTML bodies with Jinja2 placeholders)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.domain.models import Template


async def templates_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Template]:
    rows = (await session.execute(select(Template).where(Template.id.in_(ids)))).scalars()
    return {r.id: r for r in rows}
