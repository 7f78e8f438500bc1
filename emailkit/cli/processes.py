"""The long-running processes and the schema they need: ``emailkit serve``, ``emailkit worker``,
``emailkit migrate``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from emailkit.cli.preflight import check_database_role, check_provider, migrate_if_needed, settings_or_exit


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
    from emailkit.metrics import process as metrics_process

    settings = settings_or_exit()
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
        # Before anything records (the first database connection does): this run's figures, and those of the
        # processes it starts, go to a directory of its own.
        metrics_process.prepare_directory()
        check_provider(settings)
        asyncio.run(migrate_if_needed(settings, migrate=migrate))
        asyncio.run(check_database_role(settings))
        in_process = settings.broker_url is None
        jobs = startup.Workers(1 if in_process else 0, settings.worker_threads, in_process=True)
        shown_host = f"[{host}]" if ":" in host else host
        startup.announce(
            settings,
            command="serve",
            workers=jobs,
            listening=f"http://{shown_host}:{port} (GraphiQL at /graphql)"
            + (f", {workers} API processes" if workers > 1 else ""),
        )
        # Off by default: one line per open pixel is noise, and building it costs ~15 µs a request.
        options = {
            "log_level": settings.log_level.lower(),
            "access_log": access_log,
            # uvicorn's own records go to the root logger, rendered like every other line (emailkit.logconfig).
            "log_config": None,
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve GET /metrics (every worker process's figures) on this port."
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            help="Interface for --metrics-port (without EMAILKIT_METRICS_TOKEN: loopback clients only)."
        ),
    ] = "127.0.0.1",
) -> None:
    """Run jobs from EMAILKIT_BROKER_URL until SIGTERM/SIGINT (in-flight jobs finish first)."""
    from emailkit import startup
    from emailkit.app import build_runtime
    from emailkit.metrics import process as metrics_process
    from emailkit.tasks.broker.connection import BrokerUnreachable, ping_broker
    from emailkit.tasks.worker import run_workers

    settings = settings_or_exit()
    if settings.broker_url is None:
        typer.echo(
            "error: EMAILKIT_BROKER_URL is not set: without a broker, `emailkit serve` runs the jobs "
            "itself; set a redis:// or amqp:// URL to run separate workers",
            err=True,
        )
        raise typer.Exit(2)
    check_provider(settings)
    try:
        ping_broker(settings.broker_url)
    except BrokerUnreachable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # Before anything records, as in `serve`.
    metrics_process.prepare_directory()
    asyncio.run(migrate_if_needed(settings, migrate=False))
    asyncio.run(check_database_role(settings))
    jobs = startup.Workers(
        processes or startup.default_worker_processes(settings),
        threads or settings.worker_threads,
        in_process=False,
    )
    server = None
    if metrics_port is not None:
        from emailkit.web.metrics import MetricsServer

        try:
            sock = startup.bind(metrics_host, metrics_port)
        except startup.PortInUse as exc:
            typer.echo(f"error: --metrics-port: {exc}", err=True)
            raise typer.Exit(2) from None
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        server = MetricsServer(sock, token)
    startup.announce(settings, command="worker", workers=jobs, metrics=server.url if server else None)
    if server is not None:
        server.start()
    try:
        code = run_workers(settings, build_runtime, processes=jobs.processes, threads=jobs.threads)
    finally:
        if server is not None:
            server.stop()
    raise typer.Exit(code)


def migrate_cmd() -> None:
    """Apply all pending database migrations."""
    settings = settings_or_exit()
    asyncio.run(migrate_if_needed(settings, migrate=True))
    typer.echo("database is up to date", err=True)
