"""`emailkit worker` as a real child process, its log collected so a test can wait for lines in it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One `emailkit worker --processes 1` process: the pid is the process that runs the jobs."""

    def __init__(
        self, env: Mapping[str, str], *args: str, name: str = "worker", prefix: Sequence[str] = ()
    ) -> None:
        self.name = name
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        code = "from emailkit.cli import main; main()"
        self.proc = subprocess.Popen(
            # `prefix` runs it elsewhere, e.g. `ip netns exec NS` (which execs: the pid stays the worker's).
            [*prefix, sys.executable, "-c", code, "worker", "--processes", "1", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip())
                self._cond.notify_all()

    async def wait_for_log(self, text: str, within: float = 60) -> None:
        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(
                    lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
                    within,
                ) and any(text in line for line in self.lines)

        if not await asyncio.to_thread(wait):
            raise AssertionError(f"{self.name}: no {text!r} in its log:\n{self.log()}")

    def log(self, last: int = 60) -> str:
        with self._cond:
            return "\n".join(self.lines[-last:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement, connections dropped by the kernel."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
