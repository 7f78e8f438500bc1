"""Where a command's processes keep their figures, and how one process reads them all for a scrape.

``emailkit serve --workers N`` and ``emailkit worker --processes N`` run several processes that each count; a
scrape must see their sums. prometheus-client does that in its multiprocess mode: each process writes its values
into memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``, and the scraped process merges the files. The client
reads that variable when it is first imported, so the command sets it before anything records, and its child
processes inherit it.

The directory must be fresh for each run of a command (prometheus-client's documentation: wipe it between runs)
and must not be shared by two commands (an API and a worker scraped apart would each report both). So, unless
the operator names one, each command makes its own temporary directory, removes it on exit, and removes the ones
left by commands that died without cleaning up (their process is gone). A named directory is emptied at start.

While the command runs, counters of exited processes stay (a total must not go backwards when a process
restarts); the gauges of dead processes ("in use", "waiting") are dropped, by ``mark_process_dead``, when a
process exits and again before each scrape (a process killed outright never said so itself).
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "emailkit-metrics-"
_OWNED = re.compile(rf"^{re.escape(_PREFIX)}(\d+)-")
_LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_directory() -> Path:
    """For the process that starts a command (`serve`, `worker`): a fresh directory for this run's figures,
    named in the environment for every process it starts."""
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{_PREFIX}*"):
        owner = _OWNED.match(old.name)
        if owner and old.is_dir() and old.owner() == _user() and not _alive(int(owner.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    os.environ[ENV] = str(path)
    atexit.register(shutil.rmtree, path, True)
    return path


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def shared() -> bool:
    """Whether this process's figures live in the command's shared directory."""
    return bool(os.environ.get(ENV))


def on_exit_drop_live_gauges() -> None:
    """For each process of a command: its "in use"/"waiting" gauges leave the sums when it exits."""
    if shared():
        pid = os.getpid()
        atexit.register(_mark_dead, pid)


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    if os.path.isdir(os.environ.get(ENV, "")):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def drop_dead_processes() -> None:
    directory = os.environ.get(ENV)
    if not directory:
        return
    for name in {os.path.basename(f) for f in glob.glob(os.path.join(directory, "gauge_live*.db"))}:
        match = _LIVE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            _mark_dead(int(match.group(1)))


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The figures of every process of this command, in the format the scraper asked for."""
    from prometheus_client import CollectorRegistry, multiprocess, values
    from prometheus_client.exposition import choose_encoder

    from emailkit.metrics.record import families

    registry: CollectorRegistry
    if getattr(values.ValueClass, "_multiprocess", False):
        # Every process's files, this one's included (a supervisor that records nothing writes none).
        drop_dead_processes()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = families().registry
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
