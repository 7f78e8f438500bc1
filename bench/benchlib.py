"""What several benchmark scripts need: free ports, process CPU time, postfix's tools, a server's readiness.

The scripts run as `python bench/<name>.py`, so this module is importable next to them.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a live process; OSError once it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_for_quiet(below: float = 1.5, every: float = 10.0, patience: float = 600.0) -> str:
    """Wait until the 1-minute load average is below BELOW (other work shares the two cores), looking every
    EVERY seconds for up to PATIENCE; returns what to print of it, saying so when it gave up waiting."""
    # BENCH_QUIET_PATIENCE=0 measures at once (a ratio of two phases of one run, taken under the same load).
    patience = float(os.environ.get("BENCH_QUIET_PATIENCE", patience))
    start = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - start
        if load < below:
            return f"load {load:.2f}" + (f" (after waiting {waited:.0f} s)" if waited >= every else "")
        if waited >= patience:
            return f"load still {load:.2f} after waiting {waited / 60:.0f} min: measured anyway"
        print(f"    load {load:.2f}: waiting for it to fall below {below:g} ...", flush=True)
        time.sleep(every)


def find_tool(tool: str) -> str:
    """Path of one of postfix's programs (smtp-sink, smtp-source), which Debian keeps off PATH."""
    for candidate in (shutil.which(tool), f"/usr/sbin/{tool}", f"/usr/lib/postfix/sbin/{tool}"):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit(f"{tool} not found: apt-get install -y postfix (then `postfix stop` if it started)")


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll `emailkit serve`'s /healthz until it answers; exit when it died or never came up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"emailkit serve exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit("emailkit serve did not become ready")


def in_default_workspace(main: Callable[[], T]) -> Callable[[], T]:
    """Run a benchmark's main (plain or async) in the default workspace, as an API key made without
    --workspace acts: its data is made and read there (asyncio.run copies the scope into each event loop it
    starts)."""
    from emailkit.db.scope import workspace_scope
    from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID

    if inspect.iscoroutinefunction(main):

        @functools.wraps(main)
        async def run_async() -> Any:
            with workspace_scope(DEFAULT_WORKSPACE_ID):
                return await main()

        return run_async  # type: ignore[return-value]

    @functools.wraps(main)
    def run() -> T:
        with workspace_scope(DEFAULT_WORKSPACE_ID):
            return main()

    return run


async def connect_as_default_workspace(dsn: str) -> Any:
    """A raw asyncpg connection in the default workspace: under row-level security (the role emailkit runs
    as) a connection with no workspace in its setting sees no rows at all."""
    import asyncpg

    return await asyncpg.connect(dsn, server_settings={"emailkit.workspace_id": "1"})
