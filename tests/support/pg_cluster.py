"""A throw-away PostgreSQL cluster of the test's own (initdb into a temporary directory, a free port), for tests
that must do what the shared server never may: stop it, or rewrite its control data with pg_resetwal."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

SERVER_PROGRAMS: Final = ("initdb", "pg_ctl", "pg_resetwal")


def server_bin() -> Path | None:
    """The directory of PostgreSQL's server programs: EMAILKIT_TEST_PG_BIN, `pg_config --bindir`, or the newest
    Debian-style /usr/lib/postgresql/<version>/bin; None when none of them holds initdb, pg_ctl and pg_resetwal."""
    candidates: list[Path] = []
    if configured := os.environ.get("EMAILKIT_TEST_PG_BIN"):
        candidates.append(Path(configured))
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    candidates.extend(versions)
    for directory in candidates:
        if all((directory / program).is_file() for program in SERVER_PROGRAMS):
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayCluster:
    """initdb'd as the `postgres` system user when run as root (the server refuses to run as root), trust
    authentication, TCP on 127.0.0.1 unless told otherwise, autovacuum off so that nothing but the test assigns
    transaction ids."""

    def __init__(
        self,
        bindir: Path,
        *,
        netns: str | None = None,
        listen: str = "127.0.0.1",
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        # A network namespace to run the server in (tests of several hosts), listening on `listen` there.
        self.netns = netns
        self.listen = listen
        self.settings = settings or {}
        self.root = Path(tempfile.mkdtemp(prefix="emailkit-pg-"))
        self.data = self.root / "data"
        self.port = port or _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def socket_url(self, role: str = "postgres") -> str:
        """Through the Unix socket in the cluster's directory: reachable from any network namespace."""
        return f"postgresql+asyncpg://{role}@/postgres?host={self.root}&port={self.port}"

    def run(self, program: str, *args: str) -> str:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        if self.netns is not None:
            command = ["ip", "netns", "exec", self.netns, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed:\n{done.stdout}{done.stderr}{tail}")
        return done.stdout

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def trust_network(self, cidr: str) -> None:
        """Let hosts of `cidr` connect without a password (as initdb's trust does for local connections)."""
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {cidr} trust\n")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} -c autovacuum=off -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self.run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start"
        )
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@asynccontextmanager
async def running_cluster() -> AsyncIterator[ThrowawayCluster]:
    """A started throw-away cluster for the block, removed afterwards (whatever the block did to it)."""
    bindir = server_bin()
    assert bindir is not None, (
        "PostgreSQL's server programs (initdb, pg_ctl, pg_resetwal) were not found: set EMAILKIT_TEST_PG_BIN"
    )
    made = ThrowawayCluster(bindir)
    try:
        await asyncio.to_thread(made.init)
        await asyncio.to_thread(made.start)
        yield made
    finally:
        await asyncio.to_thread(made.remove)
