"""``emailkit create-api-key``: a key created and printed, the only time it is shown."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from emailkit.cli.preflight import migrate_if_needed, settings_or_exit
from emailkit.db.tables.access import Role


def create_api_key(
    name: Annotated[str, typer.Option(help="A label for the key.")],
    role: Annotated[Role, typer.Option(case_sensitive=False, help="ADMIN, EDITOR or VIEWER.")] = Role.ADMIN,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from emailkit.db.engine import Database
    from emailkit.domain import apikeys
    from emailkit.domain.errors import DomainError

    settings = settings_or_exit()

    async def run() -> str:
        await migrate_if_needed(settings, migrate=False)
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                _, raw = await apikeys.create_api_key(session, name, role)
            return raw
        finally:
            await db.dispose()

    try:
        raw = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"Created {role.value} key {name!r}. Store it now; it cannot be shown again:", err=True)
    typer.echo(raw)
