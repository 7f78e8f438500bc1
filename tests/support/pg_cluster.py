"""A throw-away PostgreSQL cluster on a free port, which a test may stop and start (never the shared one).

initdb runs as the `postgres` system user (the server refuses to run as root), in a directory of its own
under /tmp; fsync is off because nothing here must survive a power cut, only a server restart.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.redis_server import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    # Wanted (EMAILKIT_TEST_DATABASE_URL is set) but missing is an error, never a skip.
    assert found, "PostgreSQL server binaries are not installed (apt-get install postgresql)"
    return Path(found[-1]).parent


class PgCluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="emailkit-pg-"))
        self.data = self.home / "data"
        self.user = pwd.getpwnam("postgres")
        os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.home} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once (what a restart does to clients); `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def is_up(self) -> bool:
        return (
            self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode
            == 0
        )

    def wait_down(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.is_up():
            assert time.monotonic() < deadline, "the cluster did not stop"
            time.sleep(0.1)

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)
