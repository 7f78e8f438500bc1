"""The import job: runs one CSV import (see emailkit.domain.audience.imports.service)."""

from __future__ import annotations

from emailkit.db.tables.audience import Import
from emailkit.domain.audience.imports import service as imports
from emailkit.domain.runtime import Runtime
from emailkit.domain.tenancy import scope_of_row
from emailkit.tasks.broker.registry import job

# An import commits once, at the end; retries only matter when a run dies without recording its failure.
IMPORT_TIME_LIMIT_MS = 3 * 60 * 60_000


@job(imports.IMPORT_JOB, queue="imports", time_limit=IMPORT_TIME_LIMIT_MS, max_retries=3)
async def import_subscribers(runtime: Runtime, *, import_id: int) -> None:
    async with scope_of_row(runtime.db, Import, import_id) as found:
        if found:
            await imports.run_import(runtime.db, import_id, publisher=runtime.live)
