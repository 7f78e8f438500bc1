"""``emailkit bounce-server``, the SMTP receiver for EMAILKIT_BOUNCE_DOMAIN's MX (see emailkit.inbound.server), and
``emailkit bounce-mailbox``, the reader of an IMAP mailbox that bounces are delivered to (emailkit.inbound.mailbox)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from emailkit.cli.preflight import check_database_role, migrate_if_needed, settings_or_exit
from emailkit.settings import Settings

if TYPE_CHECKING:
    from emailkit.inbound.mailbox_config import MailboxConfig


def bounce_server(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for the MX).")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (the MX is reached on 25: map or forward it).")
    ] = 2525,
    hostname: Annotated[
        str | None,
        typer.Option(help="Name in the greeting and EHLO reply.", show_default="EMAILKIT_BOUNCE_DOMAIN"),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Certificate (PEM) to offer STARTTLS with.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
) -> None:
    """Receive bounces, complaint reports and unsubscribe mails for EMAILKIT_BOUNCE_DOMAIN until SIGTERM."""
    settings = settings_or_exit()
    if settings.bounce_domain is None:
        typer.echo(
            "error: EMAILKIT_BOUNCE_DOMAIN is not set: the bounce server accepts mail only for the VERP "
            "addresses of that domain",
            err=True,
        )
        raise typer.Exit(2)
    if (tls_cert is None) != (tls_key is None):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    asyncio.run(migrate_if_needed(settings, migrate=False))
    asyncio.run(check_database_role(settings))
    tls = (str(tls_cert), str(tls_key)) if tls_cert is not None and tls_key is not None else None
    asyncio.run(_run(settings, host, port, hostname or settings.bounce_domain, tls))


async def _run(settings: Settings, host: str, port: int, hostname: str, tls: tuple[str, str] | None) -> None:
    from emailkit.db.engine import Database
    from emailkit.domain.throttle import CoalescingPublisher
    from emailkit.domain.tokens import TokenSigner
    from emailkit.domain.verp import ReturnPaths
    from emailkit.inbound.server import BounceHandler, ServerOptions, start_server, tls_context
    from emailkit.tasks.pubsub import build_pubsub
    from emailkit.web.webhooks import feedback_policy

    assert settings.bounce_domain is not None
    db = Database(settings.database_url, pool_size=settings.database_pool_size)
    pubsub = build_pubsub(settings)
    handler = BounceHandler(
        db,
        ReturnPaths(TokenSigner(settings.resolved_secret_key()), settings.bounce_domain),
        policy=feedback_policy(settings),
        live=CoalescingPublisher(pubsub),
    )
    options = ServerOptions(
        hostname=hostname,
        max_message_bytes=settings.bounce_max_message_bytes,
        tls_context=tls_context(*tls) if tls is not None else None,
    )
    try:
        server = await start_server(handler, options, host, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    typer.echo(
        f"emailkit bounce-server: mail for bounce+…@ and unsubscribe+…@{settings.bounce_domain} "
        f"on smtp://{host}:{port}" + (" (STARTTLS offered)" if tls else ""),
        err=True,
    )
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await pubsub.close()
        await db.dispose()


def bounce_mailbox(
    once: Annotated[
        bool, typer.Option("--once", help="Handle what the folder holds now, then exit (for cron).")
    ] = False,
    idle: Annotated[
        bool,
        typer.Option(
            "--idle/--no-idle", help="Wait for new mail with IMAP IDLE where the server offers it, else poll."
        ),
    ] = True,
) -> None:
    """Read bounces and complaint reports from EMAILKIT_BOUNCE_MAILBOX_URL until SIGTERM, moving each one out."""
    from emailkit.domain.ports.provider import SenderConfigError
    from emailkit.inbound.mailbox_config import MailboxConfig

    settings = settings_or_exit()
    if settings.bounce_mailbox_url is None:
        typer.echo(
            "error: EMAILKIT_BOUNCE_MAILBOX_URL is not set (imaps://user:password@host:993/INBOX?processed=Processed)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        config = MailboxConfig.from_url(settings.bounce_mailbox_url.get_secret_value())
    except SenderConfigError as exc:
        typer.echo(f"error: EMAILKIT_BOUNCE_MAILBOX_URL: {exc.message}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(migrate_if_needed(settings, migrate=False))
    asyncio.run(check_database_role(settings))
    asyncio.run(_read_mailbox(settings, config, once=once, idle=idle))


async def _read_mailbox(settings: Settings, config: MailboxConfig, *, once: bool, idle: bool) -> None:
    from imapclient.exceptions import IMAPClientError

    from emailkit.db.engine import Database
    from emailkit.domain.throttle import CoalescingPublisher
    from emailkit.domain.tokens import TokenSigner
    from emailkit.domain.verp import ReturnPaths
    from emailkit.inbound.handling import Receiver
    from emailkit.inbound.mailbox import MailboxError, MailboxReader
    from emailkit.tasks.pubsub import build_pubsub
    from emailkit.web.webhooks import feedback_policy

    db = Database(settings.database_url, pool_size=settings.database_pool_size)
    pubsub = build_pubsub(settings)
    return_paths = (
        ReturnPaths(TokenSigner(settings.resolved_secret_key()), settings.bounce_domain)
        if settings.bounce_domain
        else None
    )
    reader = MailboxReader(
        config,
        Receiver(db, return_paths, policy=feedback_policy(settings), live=CoalescingPublisher(pubsub)),
        poll_seconds=settings.bounce_mailbox_poll_seconds,
        idle=idle,
        max_message_bytes=settings.bounce_max_message_bytes,
    )
    try:
        if once:
            summary = await reader.run_once()
            typer.echo(
                f"{config.describe()}: {summary.processed} processed ({summary.recorded} events recorded), "
                f"{summary.unhandled} unhandled, {summary.failed} left to retry",
                err=True,
            )
            if summary.failed:
                raise typer.Exit(1)
            return
        # A refused login or an unknown host is a configuration error: say so before running, not in a retry loop.
        await asyncio.to_thread((await reader.connect()).close)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(
            f"emailkit bounce-mailbox: reading {config.describe()}, handled mail to "
            f"{config.processed_folder!r}, the rest to {config.unhandled!r}",
            err=True,
        )
        await reader.run(stop)
    except MailboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (OSError, IMAPClientError) as exc:
        typer.echo(f"error: {config.describe()}: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        await pubsub.close()
        await db.dispose()
