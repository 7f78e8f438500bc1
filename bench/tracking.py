"""Tracking throughput: click redirects and open pixels per second, p50/p99 latency, and no hit lost.

Starts `emailkit serve` (uvicorn; uvloop and httptools when installed) on loopback against PostgreSQL,
creates a campaign with deliveries, drives `/t/c/<token>` and `/t/o/<token>.gif` with wrk (a Lua script
spreads the requests over every delivery), stops the server cleanly and checks that every request wrk
counted was recorded as an event. Prints figures; not a test. Needs wrk (apt-get install -y wrk).

    EMAILKIT_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/tracking.py \\
        [--deliveries 20000] [--duration 10] [--connections 10,50] [--wrk-threads 1] [--anonymous]

The server gets the caller's EMAILKIT_* environment (e.g. EMAILKIT_BROKER_URL=redis://... to run it as an
API process without the embedded worker), with the database, public URL, secret and log level set here.
Data is added next to whatever the database holds; the events of the new campaign are what is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import free_port, in_default_workspace, process_cpu, wait_ready
from sqlalchemy import func, insert, select

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import load_settings

WRK_SCRIPT = """
local paths = {}
local counter = 0
local threads = {}
local next_id = 0

setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  -- Threads start at different places so concurrent requests hit different deliveries.
  counter = (id * 7919) % #paths
end

request = function()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Run:
    kind: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu_s: float
    warm_up: bool = False

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def prepare(url: str, deliveries: int) -> tuple[int, list[int]]:
    """A FINISHED campaign with `deliveries` SENT deliveries; returns (campaign id, delivery ids)."""
    db = Database(url)
    try:
        await migrate.upgrade(db)
        tag = secrets.token_hex(4)
        async with db.transaction() as s:
            lst = MailingList(name=f"bench {tag}")
            campaign = Campaign(
                name=f"tracking bench {tag}",
                subject="Bench",
                from_email="bench@example.com",
                status=CampaignStatus.FINISHED,
            )
            s.add_all([lst, campaign])
            await s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
            await s.execute(
                insert(Subscriber), [{"email": f"r{i}.{tag}@example.com"} for i in range(deliveries)]
            )
            ids = (
                await s.scalars(
                    select(Subscriber.id)
                    .where(Subscriber.email.like(f"%.{tag}@example.com"))
                    .order_by(Subscriber.id)
                )
            ).all()
            await s.execute(insert(Subscription), [{"subscriber_id": i, "list_id": lst.id} for i in ids])
            await s.execute(
                insert(Delivery),
                [
                    {
                        "campaign_id": campaign.id,
                        "subscriber_id": sid,
                        "email": f"r{n}.{tag}@example.com",
                        "status": DeliveryStatus.SENT,
                    }
                    for n, sid in enumerate(ids)
                ],
            )
            delivery_ids = (
                await s.scalars(
                    select(Delivery.id).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id)
                )
            ).all()
        return campaign.id, list(delivery_ids)
    finally:
        await db.dispose()


async def count_events(url: str, campaign_id: int) -> dict[str, int]:
    db = Database(url)
    try:
        async with db.session() as s:
            rows = await s.execute(
                select(Event.type, func.count()).where(Event.campaign_id == campaign_id).group_by(Event.type)
            )
            return {str(kind): int(n) for kind, n in rows}
    finally:
        await db.dispose()


def run_wrk(
    wrk: str, script: Path, paths: Path, base: str, connections: int, threads: int, seconds: int, pid: int
) -> dict[str, int | float]:
    cpu = process_cpu(pid)
    out = subprocess.run(
        [
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            base,
            "--",
            str(paths),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    result: dict[str, int | float] = json.loads(line.removeprefix("RESULT "))
    result["server_cpu_s"] = process_cpu(pid) - cpu
    return result


def write_paths(work: Path, base: str, secret: str, delivery_ids: list[int]) -> dict[str, Path]:
    """One request path per delivery and route, for wrk to cycle through."""
    urls = TrackingUrls(base, TokenSigner(secret))
    clicks = work / "clicks.txt"
    opens = work / "opens.txt"
    target = "https://example.com/articles/{}?utm_source=newsletter&utm_medium=email"
    clicks.write_text("".join(urls.click(d, target.format(d % 25))[len(base) :] + "\n" for d in delivery_ids))
    opens.write_text("".join(urls.open_pixel(d)[len(base) :] + "\n" for d in delivery_ids))
    return {"click": clicks, "open": opens}


def measure(
    wrk: str, script: Path, paths: dict[str, Path], base: str, pid: int, args: argparse.Namespace
) -> list[Run]:
    def one(kind: str, conns: int, threads: int, seconds: int, warm_up: bool = False) -> Run:
        r = run_wrk(wrk, script, paths[kind], base, conns, threads, seconds, pid)
        return Run(
            kind,
            conns,
            int(r["requests"]),
            float(r["duration_us"]) / 1e6,
            float(r["p50_us"]) / 1000,
            float(r["p99_us"]) / 1000,
            float(r["max_us"]) / 1000,
            sum(int(r[k]) for k in ("connect", "read", "write", "status", "timeout")),
            float(r["server_cpu_s"]),
            warm_up,
        )

    # Warm up (imports, connection pools, prepared statements) before measuring; these hits count too.
    runs = [one("click", 10, 1, 2, warm_up=True), one("open", 10, 1, 2, warm_up=True)]
    for kind in ("click", "open"):
        for conns in [int(c) for c in args.connections.split(",")]:
            # Let the buffer drain so one run's writes do not slow the next one's answers.
            time.sleep(1)
            runs.append(one(kind, conns, args.wrk_threads, args.duration))
    return runs


def stop(server: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM (a clean stop: uvicorn finishes, the lifespan flushes the hit buffer); exit code and seconds."""
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        code = server.wait()
    return code, time.monotonic() - started


def print_runs(runs: list[Run]) -> None:
    print(
        f"{'route':<16}{'conns':>6}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}{'server CPU µs/req':>19}"
    )
    for run in runs:
        if run.warm_up:
            continue
        label = "click redirect" if run.kind == "click" else "open pixel"
        print(
            f"{label:<16}{run.connections:>6}{run.requests:>10}{run.rate:>10.0f}{run.p50_ms:>9.2f}"
            f"{run.p99_ms:>9.2f}{run.max_ms:>9.1f}{run.errors:>8}"
            f"{1e6 * run.server_cpu_s / max(run.requests, 1):>19.0f}"
        )


def check_recorded(runs: list[Run], before: dict[str, int], after: dict[str, int]) -> bool:
    ok = True
    for kind, event_type in (("click", EventType.CLICK), ("open", EventType.OPEN)):
        counted = sum(run.requests for run in runs if run.kind == kind)
        recorded = after.get(event_type.value, 0) - before.get(event_type.value, 0)
        # wrk counts completed responses; a request in flight when a run ended was answered (and recorded)
        # without being counted, so up to one extra per connection and run is expected.
        slack = sum(run.connections for run in runs if run.kind == kind)
        verdict = "ok" if counted <= recorded <= counted + slack else "MISMATCH"
        ok = ok and verdict == "ok"
        print(
            f"{kind:>5}: wrk counted {counted}, events recorded {recorded} "
            f"(lost: {max(counted - recorded, 0)}) {verdict}"
        )
    return ok


@in_default_workspace
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("EMAILKIT_BENCH_DATABASE_URL"))
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="10,50")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--anonymous", action="store_true", help="EMAILKIT_TRACKING_ANONYMOUS=true")
    args = parser.parse_args()

    if not args.database_url:
        sys.exit("set EMAILKIT_BENCH_DATABASE_URL (or --database-url) to a PostgreSQL database")
    url = load_settings(database_url=args.database_url, secret_key="x" * 32).database_url
    if not url.startswith("postgresql"):
        sys.exit("the tracking benchmark runs on PostgreSQL")
    wrk = shutil.which("wrk") or sys.exit("wrk not found: apt-get install -y wrk")
    emailkit = shutil.which("emailkit") or str(Path(sys.executable).with_name("emailkit"))

    campaign_id, delivery_ids = asyncio.run(prepare(url, args.deliveries))
    before = asyncio.run(count_events(url, campaign_id))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "EMAILKIT_DATABASE_URL": url,
        "EMAILKIT_SECRET_KEY": secret,
        "EMAILKIT_PUBLIC_URL": base,
        "EMAILKIT_LOG_LEVEL": "WARNING",
        "EMAILKIT_TRACKING_ANONYMOUS": "true" if args.anonymous else "false",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "tracking.lua"
        script.write_text(WRK_SCRIPT)
        paths = write_paths(work, base, secret, delivery_ids)
        log_path = work / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [emailkit, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_ready(base, server)
                print(
                    f"emailkit serve on {base} (pid {server.pid}); campaign {campaign_id} with "
                    f"{len(delivery_ids)} deliveries; wrk {args.duration}s per run, {args.wrk_threads} thread(s)"
                )
                runs = measure(wrk, script, paths, base, server.pid, args)
            finally:
                code, stopped_in = stop(server)
        server_log = log_path.read_text(errors="replace")

    after = asyncio.run(count_events(url, campaign_id))
    print()
    print_runs(runs)
    print()
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is complete.
    clean = code in (0, -signal.SIGTERM)
    print(f"server stopped {'cleanly' if clean else 'with an error'} in {stopped_in:.2f}s (exit code {code})")
    ok = check_recorded(runs, before, after) and clean
    problems = [ln for ln in server_log.splitlines() if "dropped" in ln or "Traceback" in ln or "ERROR" in ln]
    if problems:
        print("server log:\n  " + "\n  ".join(problems[:20]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
