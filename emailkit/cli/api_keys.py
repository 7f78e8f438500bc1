"""``emailkit create-api-key``: a key created and printed, the only time it is shown."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from emailkit.cli.preflight import migrate_if_needed, settings_or_exit
from emailkit.db.tables.access import Role
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_SLUG
from emailkit.domain.errors import ErrorCode


def create_api_key(
    name: Annotated[str, typer.Option(help="A label for the key.")],
    role: Annotated[
        Role | None, typer.Option(case_sensitive=False, help="ADMIN (default), EDITOR or VIEWER.")
    ] = None,
    workspace: Annotated[
        str, typer.Option(help="The slug of the workspace the key belongs to.")
    ] = DEFAULT_WORKSPACE_SLUG,
    instance: Annotated[
        bool,
        typer.Option(
            "--instance",
            help="An instance (OWNER) key of no workspace: manages workspaces, acts in one it names.",
        ),
    ] = False,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from emailkit.db.engine import Database
    from emailkit.db.scope import workspace_scope
    from emailkit.domain import apikeys, workspaces
    from emailkit.domain.errors import DomainError

    if instance and role not in (None, Role.OWNER):
        typer.echo("error: an instance key is an OWNER key; leave out --role", err=True)
        raise typer.Exit(2)
    chosen = Role.OWNER if instance else (role or Role.ADMIN)
    settings = settings_or_exit()

    async def run() -> str:
        await migrate_if_needed(settings, migrate=False)
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                if instance:
                    _, raw = await apikeys.create_api_key(session, name, chosen, instance=True)
                    return raw
                found = await workspaces.workspace_by_reference(session, workspace)
                if found is None:
                    raise DomainError.single(
                        ErrorCode.WORKSPACE_NOT_FOUND, f"no workspace with slug {workspace!r}"
                    )
                with workspace_scope(found.id):
                    _, raw = await apikeys.create_api_key(session, name, chosen)
                return raw
        finally:
            await db.dispose()

    try:
        raw = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    where = "instance" if instance else f"workspace {workspace!r}"
    typer.echo(
        f"Created {chosen.value} key {name!r} ({where}). Store it now; it cannot be shown again:", err=True
    )
    typer.echo(raw)
