"""Published versions, parsed once per process: a version never changes after it is published, and its id is
never given to another in the same database (the cache is per database URL; a test that empties its database
and restarts the ids calls ``forget_all``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from emailkit.db.tables.automation import FlowVersion
from emailkit.domain.automation.definition import Definition, parse_definition

# Versions are small and immutable; a few thousand cover any deployment's live flows.
CACHE_SIZE = 2048
_cache: OrderedDict[tuple[str, int], Definition] = OrderedDict()


async def definitions(
    session: AsyncSession | AsyncConnection, version_ids: Iterable[int]
) -> dict[int, Definition]:
    """The parsed definition of each version (those not found are left out)."""
    wanted = set(version_ids)
    where = _database(session)
    out = {vid: _cache[(where, vid)] for vid in wanted if (where, vid) in _cache}
    missing = wanted - set(out)
    if missing:
        stmt = select(FlowVersion.id, FlowVersion.definition).where(FlowVersion.id.in_(missing))
        for vid, raw in (await session.execute(stmt)).all():
            out[vid] = _cache[(where, vid)] = parse_definition(raw)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return out


def _database(bind: AsyncSession | AsyncConnection) -> str:
    engine = bind.engine if isinstance(bind, AsyncConnection) else bind.get_bind().engine
    return str(engine.url)


def forget_all() -> None:
    _cache.clear()
