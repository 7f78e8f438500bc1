"""`emailkit` command line: the composition root for every process kind."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from emailkit.domain.models import Role
from emailkit.settings import Settings, SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted email marketing backend.")


def _settings() -> Settings:
    try:
        settings = load_settings()
        settings.resolved_secret_key()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        # Alembic narrates its plugin set-up at INFO; _migrate_if_needed logs what was applied.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _check_provider(settings: Settings) -> None:
    """Build the configured provider once so a missing credential stops start-up, not the first send."""
    from emailkit.providers.registry import build_provider

    async def build_and_close() -> None:
        await build_provider(settings).close()

    try:
        asyncio.run(build_and_close())
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _migrate_if_needed(settings: Settings, *, migrate: bool) -> None:
    from emailkit import migrate as migrations
    from emailkit.domain.db import Database

    db = Database(settings.database_url)
    try:
        if not await db.ping():
            typer.echo("error: EMAILKIT_DATABASE_URL: cannot connect to the database", err=True)
            raise typer.Exit(2)
        if await migrations.pending(db):
            if settings.is_sqlite or migrate:
                before = await migrations.current_revision(db)
                await migrations.upgrade(db)
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply pending migrations first.")] = False,
) -> None:
    """Run the API (and, in embedded mode, the worker) in this process."""
    import uvicorn

    from emailkit.app import create_app

    settings = _settings()
    _check_provider(settings)
    asyncio.run(_migrate_if_needed(settings, migrate=migrate))
    typer.echo(f"emailkit listening on http://{host}:{port}  (GraphiQL at /graphql)", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes to run.")] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads per process [default: EMAILKIT_WORKER_THREADS].")
    ] = None,
) -> None:
    """Run jobs from EMAILKIT_BROKER_URL until SIGTERM/SIGINT (in-flight jobs finish first)."""
    from emailkit.app import build_runtime
    from emailkit.tasks.broker import BrokerUnreachable, ping_broker
    from emailkit.tasks.worker import run_workers

    settings = _settings()
    if settings.broker_url is None:
        typer.echo(
            "error: EMAILKIT_BROKER_URL is not set: without a broker, `emailkit serve` runs the jobs "
            "itself; set a redis:// or amqp:// URL to run separate workers",
            err=True,
        )
        raise typer.Exit(2)
    _check_provider(settings)
    try:
        ping_broker(settings.broker_url)
    except BrokerUnreachable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(_migrate_if_needed(settings, migrate=False))
    code = run_workers(
        settings, build_runtime, processes=processes, threads=threads or settings.worker_threads
    )
    raise typer.Exit(code)


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply all pending database migrations."""
    settings = _settings()
    asyncio.run(_migrate_if_needed(settings, migrate=True))
    typer.echo("database is up to date", err=True)


@app.command("create-api-key")
def create_api_key(
    name: Annotated[str, typer.Option(help="A label for the key.")],
    role: Annotated[Role, typer.Option(case_sensitive=False, help="ADMIN, EDITOR or VIEWER.")] = Role.ADMIN,
) -> None:
    """Create an API key and print it (it is shown only this once)."""
    from emailkit.domain import apikeys
    from emailkit.domain.db import Database
    from emailkit.domain.errors import DomainError

    settings = _settings()

    async def run() -> str:
        await _migrate_if_needed(settings, migrate=False)
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


@app.command("export-schema")
def export_schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL)."""
    from emailkit.schema import build_schema

    sdl = build_schema().as_str() + "\n"
    if output is None:
        sys.stdout.write(sdl)
    else:
        output.write_text(sdl)


def main() -> None:
    app()
