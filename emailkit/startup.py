"""What `emailkit serve` and `emailkit worker` do before they run: claim the port, and say what they run with.

The banner is the first thing to read when something is off ("why did nothing arrive?" — the provider is the
outbox; "which database?" — this one), so it names every choice a default made, never a password.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass

import structlog

from emailkit import logconfig
from emailkit.settings import Settings
from emailkit.tasks.broker.connection import redact_url

# Worker processes when neither --processes nor EMAILKIT_WORKER_PROCESSES says: one per CPU, up to this many
# (each process holds its own SMTP pool and database connections).
MAX_DEFAULT_PROCESSES = 8


class PortInUse(Exception):
    """The address to listen on cannot be bound; ``str()`` is one line."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("emailkit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def cpu_count() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_worker_processes(settings: Settings) -> int:
    if settings.worker_processes is not None:
        return settings.worker_processes
    return max(1, min(cpu_count(), MAX_DEFAULT_PROCESSES))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or :class:`PortInUse` naming what is wrong."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restarted server may bind while old connections linger in TIME_WAIT; a live
        # listener still makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use (another emailkit serve?); stop that process or "
                "choose another with --port"
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


@dataclass(frozen=True)
class Workers:
    """Who runs the jobs, as the banner reports it."""

    processes: int
    threads: int
    in_process: bool

    def describe(self) -> str:
        if self.processes == 0:
            return "none in this process (jobs run in `emailkit worker`)"
        if self.in_process:
            return f"{self.threads} in-process worker threads (jobs run in this process)"
        if self.processes == 1:
            return f"1 worker process x {self.threads} threads"
        return f"{self.processes} worker processes x {self.threads} threads"


def announce(
    settings: Settings,
    *,
    command: str,
    workers: Workers,
    listening: str | None = None,
    metrics: str | None = None,
) -> None:
    """Say what the process runs with: the banner's aligned lines on a console, or one structured event,
    the banner's rows as its fields, where every line must be a JSON object (EMAILKIT_LOG_FORMAT=json)."""
    if logconfig.current_format() == "console":
        print(
            banner(settings, command=command, workers=workers, listening=listening, metrics=metrics),
            file=sys.stderr,
            flush=True,
        )
        return
    rows = banner_rows(settings, workers=workers, listening=listening, metrics=metrics)
    fields = {name.lower().replace(" ", "_"): value for name, value in rows}
    structlog.get_logger("emailkit").info("starting", command=command, version=version(), **fields)


def banner(
    settings: Settings,
    *,
    command: str,
    workers: Workers,
    listening: str | None = None,
    metrics: str | None = None,
) -> str:
    rows = banner_rows(settings, workers=workers, listening=listening, metrics=metrics)
    width = max(len(name) for name, _ in rows)
    lines = [f"emailkit {version()} {command}"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def banner_rows(
    settings: Settings, *, workers: Workers, listening: str | None = None, metrics: str | None = None
) -> list[tuple[str, str]]:
    mode = "embedded" if settings.is_embedded else "production"
    provider: str = settings.provider
    if provider == "outbox":
        provider += f", writing .eml files to {settings.outbox_dir.resolve()}"
    elif provider == "smtp" and settings.smtp_url is not None:
        provider += f" via {redact_url(settings.smtp_url.get_secret_value())}, pool {settings.smtp_pool_size}"
    elif provider == "ses":
        provider += f" in {settings.ses_region}"
    broker = redact_url(settings.broker_url) if settings.broker_url else "in-process queue (no broker)"
    rows = [
        ("mode", mode),
        ("database", redact_url(settings.database_url)),
        ("broker", broker),
        ("provider", provider),
        ("public URL", settings.public_url),
        ("workers", workers.describe()),
    ]
    if settings.bounce_domain is not None:
        rows.append(("bounces", f"VERP senders at {settings.bounce_domain} (its MX: emailkit bounce-server)"))
    if listening is not None:
        rows.append(("listening", listening))
    if metrics is not None:
        rows.append(("metrics", metrics))
    if settings.requires_verified_domains:
        rows.append(("From domains", "verified sending domains only"))
    else:
        rows.append(
            (
                "From domains",
                "WARNING: unverified From domains are allowed (EMAILKIT_REQUIRE_VERIFIED_DOMAINS=false)",
            )
        )
    return rows
