"""The processes around bench/send.py: postfix's smtp-sink and smtp-source, the `emailkit worker` processes,
py-spy, and what /proc says of their CPU time and memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import find_tool, free_port, process_cpu
from send_data import PUBLIC_URL

# The worker's start-up banner: "  workers     2 worker processes x 4 threads" and "smtp via ..., pool 40".
BANNER_WORKERS = re.compile(r"^\s+workers\s+(\d+) worker process(?:es)? x (\d+) threads$", re.M)


BANNER_POOL = re.compile(r"^\s+provider\s+smtp via .*, pool (\d+)$", re.M)


def cpu_seconds(pid: int) -> float:
    try:
        return process_cpu(pid)
    except OSError:
        return 0.0


def peak_rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_label(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    return "worker process" if "multiprocessing" in cmd else "worker supervisor"


@dataclass
class Sink:
    port: int
    proc: subprocess.Popen[bytes]
    counter_file: Path

    def messages(self) -> int:
        """Messages the sink accepted so far (its -c counter, last value written)."""
        text = self.counter_file.read_bytes()[-4096:].decode(errors="replace")
        found = re.findall(r"mesg=(\d+)", text)
        return int(found[-1]) if found else 0


def start_sink(workdir: Path) -> Sink:
    port = free_port()
    counter = workdir / "sink-counter.txt"
    args = [find_tool("smtp-sink"), "-c", "-m", "1024"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    with counter.open("wb") as out:
        proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "1024"], stdout=out, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Sink(port, proc, counter)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("smtp-sink did not start")


def run_smtp_source(sink: Sink, messages: int, size: int, sessions: int) -> float:
    cmd = [
        find_tool("smtp-source"),
        "-d",  # reuse each session for the next message
        "-N",  # a distinct recipient per message, as a campaign has
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        "bounces@news.example.com",
        "-t",
        "reader@example.org",
        f"127.0.0.1:{sink.port}",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return messages / (time.perf_counter() - start)


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    log: Path
    # 0 until the banner says (a plain `emailkit worker` chooses itself).
    processes: int
    threads: int = 0
    cpu_at_start: dict[int, float] = field(default_factory=dict)

    def read_banner(self) -> bool:
        """Take the process and thread counts from the start-up banner; whether it was printed yet."""
        found = BANNER_WORKERS.search(self.log.read_text())
        if found is None:
            return False
        self.processes, self.threads = int(found.group(1)), int(found.group(2))
        return True

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)] if self.processes > 1 else [self.proc.pid]

    def labels(self) -> dict[int, str]:
        """Each process of the worker by what it is (with one process, the supervisor is the worker)."""
        labels = {pid: process_label(pid) for pid in self.pids()}
        if self.processes == 1:
            labels[self.proc.pid] = "worker process"
        return labels

    def worker_pids(self) -> list[int]:
        """The processes that run jobs."""
        return [pid for pid, label in self.labels().items() if label == "worker process"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(
                    f"emailkit worker exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if not self.processes and not self.read_banner():
                time.sleep(0.1)
                continue
            if self.log.read_text().count("worker ready") >= self.processes:
                return
            time.sleep(0.1)
        sys.exit(f"emailkit worker not ready after {timeout:g}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def worker_env(
    base: Mapping[str, str],
    database_url: str,
    redis_url: str,
    secret: str,
    sink: Sink,
    tuning: Mapping[str, str],
) -> dict[str, str]:
    """The environment of the `emailkit worker` processes (and of the API run here): BASE, where things are
    (database, broker, secret, public URL, the smtp provider pointed at the sink), then TUNING."""
    return {
        **base,
        "EMAILKIT_DATABASE_URL": database_url,
        "EMAILKIT_BROKER_URL": redis_url,
        "EMAILKIT_SECRET_KEY": secret,
        "EMAILKIT_PUBLIC_URL": PUBLIC_URL,
        "EMAILKIT_PROVIDER": "smtp",
        "EMAILKIT_SMTP_URL": f"smtp://127.0.0.1:{sink.port}?tls=none&helo=bench.example.com",
        # The benchmarks send From example domains they do not own. The rule is a check when a campaign starts
        # (tests/api/test_verified_domains_rule.py), no cost per message, so this changes no figure.
        "EMAILKIT_REQUIRE_VERIFIED_DOMAINS": "false",
        # The bench reads the start-up banner's table, which JSON logs (the default off a terminal) replace.
        "EMAILKIT_LOG_FORMAT": "console",
        **tuning,
    }


def start_workers(env: dict[str, str], processes: int | None, threads: int | None, workdir: Path) -> Workers:
    """`emailkit worker` with these options, or with none at all when they are None (--defaults)."""
    log = workdir / "worker.log"
    emailkit = Path(sys.executable).parent / "emailkit"
    options = []
    if processes is not None:
        options += ["--processes", str(processes)]
    if threads is not None:
        options += ["--threads", str(threads)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(emailkit), "worker", *options], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Workers(proc, log, processes or 0, threads or 0)


def start_profiler(output: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy recording one worker process into OUTPUT (collapsed stacks) until it gets SIGINT."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            # CPU only: samples of threads holding the GIL.
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
