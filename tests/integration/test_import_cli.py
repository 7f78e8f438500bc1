"""`emailkit import FILE --list NAME`, run as a user would (a subprocess against SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber, Subscription, SubscriptionStatus
from emailkit.domain.audience import lists
from tests.integration.test_cli import Env, env  # noqa: F401 - the fixture, for both backends

FIXTURES = Path(__file__).parents[1] / "fixtures"
MESSY = str(FIXTURES / "import_messy.csv")


def prepare(url: str) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            async with db.transaction() as s:
                await lists.create_list(s, lists.ListInput(name="Newsletter"))
        finally:
            await db.dispose()

    asyncio.run(run())


def stored(url: str) -> tuple[dict[str, str], set[SubscriptionStatus]]:
    async def run() -> tuple[dict[str, str], set[SubscriptionStatus]]:
        db = Database(url)
        try:
            async with db.session() as s:
                people = {r.email: r.name for r in (await s.execute(select(Subscriber))).scalars()}
                statuses = set((await s.execute(select(Subscription.status))).scalars())
            return people, statuses
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_import_command_reports_rows_and_loads_the_valid_ones(env: Env) -> None:  # noqa: F811
    assert env.run("migrate").returncode == 0
    prepare(env.database_url)

    result = env.run("import", MESSY, "--list", "Newsletter", "--status", "unconfirmed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Import 1 FINISHED (UTF-8 with BOM, delimiter ';'): 11 rows, 7 inserted, 0 updated, 0 skipped, 4 failed",
        "Rows not imported:",
        "  row 4: Invalid email address: An email address must have an @-sign.",
        "  row 6: duplicate email: already in row 2",
        "  row 7: Invalid email address: The part after the @-sign is not valid. It should have a period.",
        "  row 9: 8 columns, but the header has 7",
    ]
    # The progress bar went to stderr.
    assert "Loading" in result.stderr
    people, statuses = stored(env.database_url)
    assert len(people) == 7 and people["bob@example.com"] == 'Bob "the builder"'
    assert statuses == {SubscriptionStatus.UNCONFIRMED}

    again = env.run("import", MESSY, "--list", "Newsletter", "--mode", "skip-existing", "--errors", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "Import 2 FINISHED (UTF-8 with BOM, delimiter ';'): 11 rows, 0 inserted, 0 updated, 7 skipped, 4 failed",
        "First 1 rows not imported:",
        "  row 4: Invalid email address: An email address must have an @-sign.",
    ]


def test_import_command_refuses_unusable_input(env: Env, tmp_path: Path) -> None:  # noqa: F811
    assert env.run("migrate").returncode == 0
    unknown = env.run("import", MESSY, "--list", "Nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: No list named 'Nope'"

    no_email = tmp_path / "names.csv"
    no_email.write_text("name;city\nAnn;Rome\n")
    refused = env.run("import", str(no_email))
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: The file has no email column (columns: 'name', 'city')")

    mapped = env.run("import", str(no_email), "--map", '{"name": "email"}')
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.stdout.splitlines()[0].endswith("1 rows, 0 inserted, 0 updated, 0 skipped, 1 failed")
