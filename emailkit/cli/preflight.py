"""What a command checks before it starts: the settings, the provider's credentials, the database schema.

Each check that fails prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import logging

import typer

from emailkit.settings import Settings, SettingsError, configure_logging, load_settings


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
        settings.resolved_secret_key()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


def check_provider(settings: Settings) -> None:
    """Build the configured provider once so a missing credential stops start-up, not the first send."""
    from emailkit.providers.registry import build_provider

    async def build_and_close() -> None:
        await build_provider(settings).close()

    try:
        asyncio.run(build_and_close())
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def migrate_if_needed(settings: Settings, *, migrate: bool) -> None:
    from emailkit import migrate as migrations
    from emailkit.db.engine import Database

    db = Database(settings.database_url)
    try:
        if not await db.ping():
            typer.echo("error: EMAILKIT_DATABASE_URL: cannot connect to the database", err=True)
            raise typer.Exit(2)
        if await migrations.pending(db):
            if settings.is_sqlite or migrate:
                before = await migrations.current_revision(db)
                try:
                    await migrations.upgrade(db)
                except migrations.MigrationError as exc:
                    typer.echo(f"error: {exc}", err=True)
                    raise typer.Exit(2) from None
                logging.getLogger("emailkit").info(
                    "database migrated from %s to %s",
                    before or "an empty schema",
                    await migrations.current_revision(db),
                )
            else:
                typer.echo(
                    "error: the database has pending migrations; run `emailkit migrate` "
                    "(or start with `emailkit serve --migrate`)",
                    err=True,
                )
                raise typer.Exit(2)
    finally:
        await db.dispose()


async def check_database_role(settings: Settings) -> None:
    """On PostgreSQL, the role must be held to row-level security, the second layer of workspace isolation."""
    if settings.is_sqlite:
        return
    from emailkit.db import rls
    from emailkit.db.engine import Database
    from emailkit.db.roles import bypasses_row_security, not_leakproof

    db = Database(settings.database_url)
    try:
        reason = await bypasses_row_security(db)
        unmarked = await not_leakproof(db) if reason is None else []
    finally:
        await db.dispose()
    if unmarked:
        logging.getLogger("emailkit").warning(
            "%s not LEAKPROOF in this database: under row-level security, substring search and attribute "
            "filters scan the workspace's subscribers instead of using their indexes; a superuser can run: %s",
            ", ".join(unmarked),
            "; ".join(rls.leakproof_statements()),
        )
    if reason is None:
        return
    message = (
        f"EMAILKIT_DATABASE_URL connects as a role that {reason}, so the row-level security policies that keep "
        "workspaces apart do not apply to it; connect as a role without SUPERUSER and BYPASSRLS (README, "
        '"Workspaces")'
    )
    if settings.database_allow_rls_bypass:
        logging.getLogger("emailkit").warning(
            "%s; starting anyway (EMAILKIT_DATABASE_ALLOW_RLS_BYPASS)", message
        )
        return
    typer.echo(f"error: {message}, or set EMAILKIT_DATABASE_ALLOW_RLS_BYPASS=true to start anyway", err=True)
    raise typer.Exit(2)
