"""An import writes into its own workspace only: another workspace's subscriber with the same address, its
suppressions and erasures, its lists and its report are never touched or consulted. Run as the job runs it
(inside the import's workspace); on PostgreSQL through COPY into the staging table, held to row-level
security, on SQLite through its one connection."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import (
    Import,
    ImportMode,
    ImportRowError,
    ImportStatus,
    SubscriptionStatus,
    SuppressionReason,
)
from emailkit.domain.audience import gdpr, subscribers, suppressions
from emailkit.domain.audience.imports import load as imports_load
from emailkit.domain.errors import DomainError
from emailkit.domain.runtime import Runtime
from emailkit.tasks.imports import import_subscribers
from tests.support.factories import insert_list
from tests.support.import_job import add_subscriber, memberships, people, report, run, start
from tests.support.workspaces import add_workspace

C = SubscriptionStatus.CONFIRMED
CSV = (
    b"email,name,City\n"
    b"anna@example.com,Anna Two,Paris\n"
    b"sup@example.com,Sue,\n"
    b"gone@example.com,Gus,\n"
    b"known@example.com,,Lyon\n"
    b"not-an-address,X,\n"
)


async def workspace_one(db: Database) -> dict[str, Any]:
    """Workspace 1: Anna and Gus's successor on a list, a suppressed address, an erased one."""
    newsletter = await insert_list(db, "One's list")
    await add_subscriber(
        db, "anna@example.com", name="Anna One", attributes={"City": "Rome"}, list_ids=[newsletter]
    )
    await add_subscriber(db, "gone@example.com", name="Gus")
    async with db.transaction() as s:
        await suppressions.add_suppression(s, "sup@example.com", SuppressionReason.HARD_BOUNCE)
        gone = await subscribers.get_by_email(s, "gone@example.com")
        assert gone is not None
        await gdpr.erase_subscriber(s, gone.id)
    return {"list": newsletter, "people": await people(db), "members": await memberships(db)}


def summary(row: Import) -> tuple[object, ...]:
    return (row.status, row.error, row.inserted, row.updated, row.skipped, row.failed)


@pytest.mark.parametrize("mode", [ImportMode.UPSERT, ImportMode.SKIP_EXISTING])
async def test_an_import_leaves_another_workspace_alone(db: Database, mode: ImportMode) -> None:
    before = await workspace_one(db)
    other = await add_workspace(db, "brand-two")
    with workspace_scope(other):
        mine = await insert_list(db, "Two's list")
        await add_subscriber(db, "known@example.com", name="Kim", attributes={"City": "Nice"})
        # Workspace 1's list is not the import's to subscribe to: as unknown as a missing one.
        for list_id in (before["list"], 987654321):
            with pytest.raises(DomainError) as refused:
                await start(db, CSV, list_ids=[list_id])
            assert [e.code.value for e in refused.value.errors] == ["LIST_NOT_FOUND"]

        row = await run(db, await start(db, CSV, list_ids=[mine], mode=mode))
        updated = 1 if mode is ImportMode.UPSERT else 0
        # Workspace 1's suppression and erasure say nothing about workspace 2's subscribers.
        assert summary(row) == (ImportStatus.FINISHED, None, 3, updated, 1 - updated, 1)
        assert [line for line, _ in await report(db, row.id)] == [6]
        found = await people(db)
        assert {email: (p.name, p.attributes) for email, p in found.items()} == {
            "anna@example.com": ("Anna Two", {"City": "Paris"}),
            "sup@example.com": ("Sue", {}),
            "gone@example.com": ("Gus", {}),
            "known@example.com": ("Kim", {"City": "Lyon" if mode is ImportMode.UPSERT else "Nice"}),
        }
        expected = {(e, mine): C for e in ("anna@example.com", "sup@example.com", "gone@example.com")}
        if mode is ImportMode.UPSERT:
            expected[("known@example.com", mine)] = C
        assert await memberships(db) == expected

    # Workspace 1: not a row changed, and no report rows of workspace 2's import.
    after = await people(db)
    assert {e: (p.id, p.name, p.attributes, p.updated_at) for e, p in after.items()} == {
        e: (p.id, p.name, p.attributes, p.updated_at) for e, p in before["people"].items()
    }
    assert await memberships(db) == before["members"]
    async with db.session() as s:
        assert (await s.execute(select(ImportRowError))).first() is None
        assert (await s.execute(select(Import))).first() is None


async def test_the_import_job_runs_in_the_workspace_of_its_import(db: Database, runtime: Runtime) -> None:
    await add_subscriber(db, "anna@example.com", name="Anna One")
    other = await add_workspace(db, "brand-two")
    with workspace_scope(other):
        import_id = await start(db, b"email,name\nanna@example.com,Anna Two\n")
    # The job starts outside any workspace, as a worker does, and finds the import's.
    job = import_subscribers(runtime, import_id=import_id)
    await asyncio.create_task(job, context=contextvars.Context())
    with workspace_scope(other):
        assert {e: p.name for e, p in (await people(db)).items()} == {"anna@example.com": "Anna Two"}
    assert {e: p.name for e, p in (await people(db)).items()} == {"anna@example.com": "Anna One"}


@pytest.mark.postgresql_only
async def test_a_concurrent_writer_in_the_same_workspace_sends_the_import_conflict_safe(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address appears in workspace 2 after the import flagged its rows: the plain INSERT meets it, and the
    import runs again with ON CONFLICT on (workspace_id, email); workspace 1's same address is untouched."""
    await add_subscriber(db, "new@example.com", name="One", attributes={"keep": True})
    before = await people(db)
    other = await add_workspace(db, "brand-two")
    real = imports_load.mark_existing
    done = False

    async def flag_then_add(*args: Any) -> None:
        nonlocal done
        await real(*args)
        if not done:
            done = True
            await add_subscriber(db, "new@example.com", name="Meanwhile")

    monkeypatch.setattr(imports_load, "mark_existing", flag_then_add)
    with workspace_scope(other):
        mine = await insert_list(db, "Two's list")
        row = await run(db, await start(db, b"email,name\nnew@example.com,Two\n", list_ids=[mine]))
        assert summary(row) == (ImportStatus.FINISHED, None, 0, 1, 0, 0)
        assert {e: p.name for e, p in (await people(db)).items()} == {"new@example.com": "Two"}
        assert await memberships(db) == {("new@example.com", mine): C}
    after = await people(db)
    assert after["new@example.com"].name == "One" and after["new@example.com"].attributes == {"keep": True}
    assert after["new@example.com"].updated_at == before["new@example.com"].updated_at
