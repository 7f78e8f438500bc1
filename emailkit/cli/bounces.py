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
        bool, typer.Option("--once", help="Handle what the folders hold now, then exit (for cron).")
    ] = False,
    idle: Annotated[
        bool,
        typer.Option(
            "--idle/--no-idle", help="Wait for new mail with IMAP IDLE where the server offers it, else poll."
        ),
    ] = True,
    refresh_seconds: Annotated[
        float,
        typer.Option(
            help="How often the senders are read again, to follow mailboxes added, changed or removed."
        ),
    ] = 60.0,
) -> None:
    """Read bounces and complaint reports from EMAILKIT_BOUNCE_MAILBOX_URL and from every sender's bounce mailbox
    (settings.bounceMailbox, all workspaces) until SIGTERM, moving each one out."""
    from emailkit.domain.ports.provider import SenderConfigError
    from emailkit.inbound.mailbox_config import MailboxConfig

    settings = settings_or_exit()
    config = None
    if settings.bounce_mailbox_url is not None:
        try:
            config = MailboxConfig.from_url(settings.bounce_mailbox_url.get_secret_value())
        except SenderConfigError as exc:
            typer.echo(f"error: EMAILKIT_BOUNCE_MAILBOX_URL: {exc.message}", err=True)
            raise typer.Exit(2) from None
    if refresh_seconds <= 0:
        typer.echo("error: --refresh-seconds must be positive", err=True)
        raise typer.Exit(2)
    asyncio.run(migrate_if_needed(settings, migrate=False))
    asyncio.run(check_database_role(settings))
    asyncio.run(_read_mailboxes(settings, config, once=once, idle=idle, refresh_seconds=refresh_seconds))


async def _read_mailboxes(
    settings: Settings, config: MailboxConfig | None, *, once: bool, idle: bool, refresh_seconds: float
) -> None:
    from imapclient.exceptions import IMAPClientError

    from emailkit.db.engine import Database
    from emailkit.domain.throttle import CoalescingPublisher
    from emailkit.domain.tokens import TokenSigner
    from emailkit.domain.verp import ReturnPaths
    from emailkit.inbound.handling import Receiver
    from emailkit.inbound.mailbox import MailboxError, MailboxReader
    from emailkit.inbound.mailbox_fleet import (
        ENV_KEY,
        MailboxFleet,
        MailboxSource,
        read_once,
        senders_mailboxes,
    )
    from emailkit.tasks.pubsub import build_pubsub
    from emailkit.web.webhooks import feedback_policy

    db = Database(settings.database_url, pool_size=settings.database_pool_size)
    pubsub = build_pubsub(settings)
    return_paths = (
        ReturnPaths(TokenSigner(settings.resolved_secret_key()), settings.bounce_domain)
        if settings.bounce_domain
        else None
    )
    # One receiver for every mailbox: one database pool, one live-update publisher.
    receiver = Receiver(db, return_paths, policy=feedback_policy(settings), live=CoalescingPublisher(pubsub))

    def make_reader(mailbox: MailboxConfig) -> MailboxReader:
        return MailboxReader(
            mailbox,
            receiver,
            poll_seconds=settings.bounce_mailbox_poll_seconds,
            idle=idle,
            max_message_bytes=settings.bounce_max_message_bytes,
        )

    fixed = {ENV_KEY: MailboxSource(ENV_KEY, "EMAILKIT_BOUNCE_MAILBOX_URL", config)} if config else {}

    async def load() -> dict[str, MailboxSource]:
        return await senders_mailboxes(db, settings.resolved_secret_key())

    try:
        if once:
            sources = {**fixed, **await load()}
            if not sources:
                typer.echo(
                    "error: no mailbox to read: set EMAILKIT_BOUNCE_MAILBOX_URL or give a sender "
                    "settings.bounceMailbox",
                    err=True,
                )
                raise typer.Exit(2)
            failed = False
            for key, result in (await read_once(make_reader, sources)).items():
                if isinstance(result, str):
                    typer.echo(f"error: {sources[key].label}: {result}", err=True)
                    failed = True
                    continue
                typer.echo(
                    f"{sources[key].config.describe()}: {result.processed} processed ({result.recorded} events "
                    f"recorded), {result.unhandled} unhandled, {result.failed} left to retry",
                    err=True,
                )
                failed = failed or result.failed > 0
            if failed:
                raise typer.Exit(1)
            return
        if config is not None:
            # The operator's own mailbox refusing us is a configuration error: say so before running, not in a
            # retry loop. (A sender's is its workspace's business: logged, and tried again later.)
            try:
                await asyncio.to_thread((await make_reader(config).connect()).close)
            except MailboxError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            except (OSError, IMAPClientError) as exc:
                typer.echo(f"error: {config.describe()}: {exc}", err=True)
                raise typer.Exit(2) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(
            "emailkit bounce-mailbox: reading "
            + (
                f"{config.describe()}, handled mail to {config.processed_folder!r}, the rest to "
                f"{config.unhandled!r}, and "
                if config
                else ""
            )
            + f"the senders' bounce mailboxes (looked up every {refresh_seconds:g}s)",
            err=True,
        )
        await MailboxFleet(make_reader, load, fixed, refresh_seconds=refresh_seconds).run(stop)
    finally:
        await pubsub.close()
        await db.dispose()
