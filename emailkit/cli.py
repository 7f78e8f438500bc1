"""`emailkit` command line: the composition root for every process kind."""

from __future__ import annotations

import asyncio
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from emailkit.db.tables.access import Role
from emailkit.settings import Settings, SettingsError, configure_logging, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted email marketing backend.")

_option_type = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    # Typer's rich help labels every flag (--help, --migrate) with a "<bool>" value it never takes.
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def _print_version(value: bool) -> None:
    if value:
        from emailkit.startup import version

        typer.echo(f"emailkit {version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Self-hosted email marketing backend."""


def _settings() -> Settings:
    try:
        settings = load_settings()
        settings.resolved_secret_key()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply pending migrations first.")] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every HTTP request (tracking hits too).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes sharing the port (production mode: needs EMAILKIT_BROKER_URL; jobs then run "
            "in `emailkit worker`).",
        ),
    ] = 1,
) -> None:
    """Run the API (and, in embedded mode, the worker) in this process."""
    import uvicorn

    from emailkit import startup
    from emailkit.app import create_app

    settings = _settings()
    if workers > 1 and settings.broker_url is None:
        typer.echo(
            "error: --workers needs EMAILKIT_BROKER_URL: without a broker each API process would run its own "
            "in-process queue; set a redis:// or amqp:// URL and run `emailkit worker` for the jobs",
            err=True,
        )
        raise typer.Exit(2)
    # The port first: a port in use stops start-up before any worker runs or the database is touched.
    try:
        sock = startup.bind(host, port)
    except startup.PortInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with sock:
        _check_provider(settings)
        asyncio.run(_migrate_if_needed(settings, migrate=migrate))
        in_process = settings.broker_url is None
        jobs = startup.Workers(1 if in_process else 0, settings.worker_threads, in_process=True)
        shown_host = f"[{host}]" if ":" in host else host
        typer.echo(
            startup.banner(
                settings,
                command="serve",
                workers=jobs,
                listening=f"http://{shown_host}:{port} (GraphiQL at /graphql)"
                + (f", {workers} API processes" if workers > 1 else ""),
            ),
            err=True,
        )
        # Off by default: one line per open pixel is noise, and building it costs ~15 µs a request.
        options = {
            "log_level": settings.log_level.lower(),
            "access_log": access_log,
            # Forwarding headers are read by the app alone, and only from EMAILKIT_TRUSTED_PROXIES (uvicorn
            # would otherwise believe them from 127.0.0.1 on its own).
            "proxy_headers": False,
            # A GraphQL operation over WebSocket is bounded like a JSON body over HTTP.
            "ws_max_size": settings.max_request_bytes,
        }
        if workers == 1:
            config = uvicorn.Config(create_app(settings), host=host, port=port, **options)  # type: ignore[arg-type]
            uvicorn.Server(config).run(sockets=[sock])
            return
    # Each process builds its own app (and connection pools) from the same environment; uvicorn binds the port
    # for them, just released (checked above).
    uvicorn.run(
        "emailkit.app:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        # uvicorn kills a child that has not answered its health check within this; importing the app takes
        # longer than uvicorn's 5 s default on a busy 2-core machine, and the children were killed in a loop.
        timeout_worker_healthcheck=60,
        **options,  # type: ignore[arg-type]
    )


@app.command()
def worker(
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes to run.",
            show_default="EMAILKIT_WORKER_PROCESSES, else one per CPU up to 8",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Threads per process.", show_default="EMAILKIT_WORKER_THREADS, else 4"),
    ] = None,
) -> None:
    """Run jobs from EMAILKIT_BROKER_URL until SIGTERM/SIGINT (in-flight jobs finish first)."""
    from emailkit import startup
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
    jobs = startup.Workers(
        processes or startup.default_worker_processes(settings),
        threads or settings.worker_threads,
        in_process=False,
    )
    typer.echo(startup.banner(settings, command="worker", workers=jobs), err=True)
    code = run_workers(settings, build_runtime, processes=jobs.processes, threads=jobs.threads)
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
    from emailkit.db.engine import Database
    from emailkit.domain import apikeys
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


class ImportModeOption(StrEnum):
    upsert = "upsert"
    skip_existing = "skip-existing"


class ImportStatusOption(StrEnum):
    confirmed = "confirmed"
    unconfirmed = "unconfirmed"
    unsubscribed = "unsubscribed"


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")],
    list_names: Annotated[
        list[str] | None, typer.Option("--list", help="Subscribe to this list (by name; repeatable).")
    ] = None,
    mode: Annotated[ImportModeOption, typer.Option(help="What to do with existing subscribers.")] = (
        ImportModeOption.upsert
    ),
    status: Annotated[
        ImportStatusOption | None,
        typer.Option(help="Subscription status [default: by the list's opt-in].", show_default=False),
    ] = None,
    column_map: Annotated[
        str | None, typer.Option("--map", help='Column map as JSON, e.g. \'{"E-Mail": "email"}\'.')
    ] = None,
    errors_shown: Annotated[
        int, typer.Option("--errors", min=0, max=1000, help="Rows of the report to print.")
    ] = 20,
) -> None:
    """Import subscribers from a CSV file, here and now (the same import as the API's importSubscribers)."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emailkit.db.engine import Database
    from emailkit.db.tables.audience import (
        Import,
        ImportMode,
        ImportRowError,
        ImportStatus,
        SubscriptionStatus,
    )
    from emailkit.domain.audience.imports import csvfile as imports_csv
    from emailkit.domain.audience.imports import service as imports
    from emailkit.domain.audience.imports.progress import ImportState
    from emailkit.domain.errors import DomainError
    from emailkit.domain.throttle import CoalescingPublisher
    from emailkit.tasks.pubsub import build_pubsub

    settings = _settings()
    console = Console(stderr=True)
    try:
        mapping = json.loads(column_map) if column_map else None
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --map is not valid JSON ({exc})", err=True)
        raise typer.Exit(2) from None

    async def run() -> tuple[Import | None, list[ImportRowError]]:
        await _migrate_if_needed(settings, migrate=False)
        db = Database(settings.database_url)
        pubsub = build_pubsub(settings)
        publisher = CoalescingPublisher(pubsub)
        try:
            size = file.stat().st_size
            with file.open("rb") as source:
                sample = source.read(imports_csv.SAMPLE_BYTES)
                source.seek(0)
                async with db.transaction() as session:
                    request = imports.ImportRequest(
                        source_name=file.name,
                        list_ids=await imports.list_ids_by_name(session, list_names or []),
                        mode=ImportMode.SKIP_EXISTING
                        if mode is ImportModeOption.skip_existing
                        else ImportMode.UPSERT,
                        subscription_status=SubscriptionStatus(status.upper()) if status else None,
                        column_map=mapping,
                    )
                    row = await imports.create_local_import(session, request, sample, size)
                columns = (
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                )
                with Progress(*columns, console=console) as bar:
                    task = bar.add_task("Reading", total=None)

                    async def show(state: ImportState) -> None:
                        if state.phase == "loading" or state.final:
                            done = state.inserted + state.updated + state.skipped + state.failed
                            bar.update(task, description="Loading", total=state.total, completed=done)
                        else:
                            bar.update(
                                task,
                                description="Reading",
                                total=state.total or None,
                                completed=state.processed,
                            )

                    result = await imports.run_import(
                        db, row.id, publisher=publisher, source=source, on_progress=show
                    )
            async with db.session() as session:
                report = await imports.import_errors(session, row.id, errors_shown)
            return result, report
        finally:
            await publisher.aclose()
            await pubsub.close()
            await db.dispose()

    try:
        result, report = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if result is None:
        typer.echo("error: the import was taken over by another run", err=True)
        raise typer.Exit(1)
    encoding, delimiter = result.options.get("encoding"), result.options.get("delimiter")
    detected = f" ({encoding}, delimiter {delimiter!r})" if encoding else ""
    typer.echo(
        f"Import {result.id} {result.status.value}{detected}: {result.total} rows, {result.inserted} inserted, "
        f"{result.updated} updated, {result.skipped} skipped, {result.failed} failed"
    )
    if result.error:
        typer.echo(f"error: {result.error}", err=True)
    if report:
        more = result.failed + result.skipped - len(report)
        typer.echo("Rows not imported:" if more <= 0 else f"First {len(report)} rows not imported:")
        for entry in report:
            typer.echo(f"  row {entry.row}: {entry.message}")
    raise typer.Exit(0 if result.status is ImportStatus.FINISHED else 1)


def main() -> None:
    app()
