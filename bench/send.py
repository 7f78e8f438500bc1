"""End-to-end campaign send: PostgreSQL + Redis + `emailkit worker` processes + the smtp provider into
postfix's smtp-sink, timed from `startCampaign` to FINISHED, next to postfix's smtp-source into the same sink.

Prints figures (not a test). Needs PostgreSQL, Redis and the Debian package postfix (smtp-sink and
smtp-source; the postfix daemon itself stays stopped). The database named by --database-url is wiped.

    python bench/send.py [--subscribers 100000] [--processes 2] [--threads 4] [--pool-size 40]
                         [--database-url postgresql://postgres@127.0.0.1:5432/ek_h14]
                         [--redis-url redis://127.0.0.1:6379/14] [--profile worker.txt]
    python bench/send.py --defaults [--subscribers 100000] ...

--defaults starts the workers as the README tells a user to: a plain `emailkit worker`, no options, and no
tuning variables (only what says where things are: database, broker, secret, public URL, provider and its
URL; every other EMAILKIT_* variable of this shell is dropped, for the API's startCampaign too). How many
processes and threads that gives, and the pool and batch size, are read from the worker's start-up banner.

What runs:

1. the schema is recreated by the migrations; N subscribers and their subscriptions to one list are
   bulk-loaded with asyncpg's COPY; a personalised MJML campaign (5 tracked links, an open pixel, the
   unsubscribe link and List-Unsubscribe headers) targets the list;
2. smtp-sink listens on a free port; `emailkit worker --processes P --threads T` starts with
   EMAILKIT_PROVIDER=smtp pointed at it and EMAILKIT_BROKER_URL at the Redis database;
3. once every worker process is ready, `startCampaign` goes through the GraphQL API (in this process, over
   ASGI) and the clock runs until the campaign row says FINISHED; the ledger and the sink's own counter are
   then checked (every recipient SENT, the sink saw exactly N messages);
4. smtp-source sends the same number of bytes per message into the same sink over 10 reused sessions
   (-d), before and after the campaign; the campaign's rate is compared with the faster of the two.

CPU seconds are those spent between `startCampaign` and FINISHED (from /proc); peak RSS is each process's
high-water mark (VmHWM), read before the workers stop.
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx
import redis
from benchlib import connect_as_default_workspace, in_default_workspace
from send_data import asyncpg_dsn, create_campaign, load_audience, message_size, reset_schema
from send_processes import (
    BANNER_POOL,
    Workers,
    cpu_seconds,
    peak_rss_mb,
    run_smtp_source,
    start_profiler,
    start_sink,
    start_workers,
    worker_env,
)

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/ek_h14"


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"


async def start_campaign(settings_env: dict[str, str], campaign_id: int, api_key: str) -> None:
    """`startCampaign` through the GraphQL API, as a client would call it."""
    from emailkit.app import create_app
    from emailkit.schema.relay import to_global_id
    from emailkit.settings import Settings
    from emailkit.tasks.worker import close_runtime

    os.environ.update(settings_env)
    app = create_app(Settings())
    query = "mutation($id: ID!) { startCampaign(input: {id: $id}) { campaign { status } userErrors { message } } }"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": {"id": to_global_id("Campaign", campaign_id)}},
                headers={"Authorization": f"Bearer {api_key}"},
            )
        payload = response.json()
        result = (payload.get("data") or {}).get("startCampaign")
        if not result or result["userErrors"]:
            sys.exit(f"startCampaign failed: {payload}")
    finally:
        await close_runtime(app.state.runtime)


@dataclass
class Run:
    seconds: float
    sent: int
    statuses: dict[str, int]


async def send_campaign(
    url: str, settings_env: dict[str, str], campaign_id: int, api_key: str, workers: Workers
) -> Run:
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        start = time.perf_counter()
        await start_campaign(settings_env, campaign_id, api_key)
        next_report = start + 5
        while True:
            row = await conn.fetchrow(
                "SELECT status, sent_count, failed_count, skipped_count, recipients_count "
                "FROM campaigns WHERE id = $1",
                campaign_id,
            )
            now = time.perf_counter()
            if row["status"] == "FINISHED":
                break
            if row["status"] != "RUNNING":
                sys.exit(f"campaign stopped as {row['status']}: {dict(row)}")
            if workers.proc.poll() is not None:
                sys.exit(f"the workers exited:\n{workers.log.read_text()[-3000:]}")
            if now >= next_report:
                elapsed = now - start
                print(
                    f"    {elapsed:6.1f}s  sent {row['sent_count']:>7,} of {row['recipients_count']:,}"
                    f"  ({row['sent_count'] / elapsed:,.0f}/s)",
                    flush=True,
                )
                next_report += 5
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - start
        counts = await conn.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE campaign_id = $1 GROUP BY status", campaign_id
        )
        return Run(seconds, int(row["sent_count"]), {r["status"]: int(r["n"]) for r in counts})
    finally:
        await conn.close()


async def postgres_backends(url: str) -> list[int]:
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


def check_delivered(run: Run, sink_seen: int, n: int) -> None:
    """Exits non-zero unless every recipient is SENT in the ledger and the sink saw each message once."""
    problems = []
    if run.statuses.get("SENT", 0) != n:
        problems.append(f"expected {n} SENT deliveries")
    if sink_seen != n:
        problems.append(f"the sink saw {sink_seen} messages, expected {n}")
    if problems:
        sys.exit("; ".join(problems))


def tuning(args: argparse.Namespace) -> dict[str, str]:
    """The workers' tuning variables from the command line's options."""
    return {
        "EMAILKIT_SMTP_POOL_SIZE": str(args.pool_size),
        "EMAILKIT_BATCH_SIZE": str(args.batch_size),
        "EMAILKIT_LOG_LEVEL": "INFO",
    }


def read_defaults(args: argparse.Namespace, workers: Workers) -> None:
    """What a plain `emailkit worker` chose (its start-up banner) and the default batch size, into ARGS."""
    from emailkit.settings import Settings

    pool = BANNER_POOL.search(workers.log.read_text())
    args.processes, args.threads = workers.processes, workers.threads
    args.pool_size = int(pool.group(1)) if pool else 0
    # The API that plans the batches runs with the same (default) settings.
    args.batch_size = Settings.model_fields["batch_size"].default
    print(
        f"  --defaults: `emailkit worker` chose {args.processes} process(es) x {args.threads} threads, "
        f"SMTP pool {args.pool_size}; batches of {args.batch_size}"
    )


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The options of the workers and of smtp-source (bench/flows.py takes them too)."""
    parser.add_argument("--processes", type=int, default=2, help="emailkit worker --processes")
    parser.add_argument("--threads", type=int, default=4, help="emailkit worker --threads")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=40,
        help="EMAILKIT_SMTP_POOL_SIZE per worker process (the setting defaults to 40 too; 5 left a worker waiting)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="EMAILKIT_BATCH_SIZE")
    parser.add_argument("--source-messages", type=int, default=30_000, help="messages smtp-source sends")
    parser.add_argument("--source-sessions", type=int, default=10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    add_worker_options(parser)
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="a plain `emailkit worker` as the README starts it: no options, no tuning variables "
        "(--processes, --threads, --pool-size and --batch-size are then ignored)",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--profile", type=Path, help="py-spy record one worker process into this file (collapsed stacks)"
    )
    return parser.parse_args()


@in_default_workspace
def main() -> None:
    args = parse_args()
    if args.defaults:
        # Nothing of this shell's tuning reaches the workers or the API that plans the batches.
        for name in [k for k in os.environ if k.startswith("EMAILKIT_")]:
            del os.environ[name]

    n = args.subscribers
    workdir = Path(tempfile.mkdtemp(prefix="emailkit-bench-"))
    secret = secrets.token_urlsafe(32)
    print(f"emailkit send benchmark: {n:,} subscribers, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")

    t = time.perf_counter()
    asyncio.run(reset_schema(args.database_url))
    list_id = asyncio.run(load_audience(args.database_url, n))
    campaign_id, api_key = asyncio.run(create_campaign(args.database_url, list_id))
    size = asyncio.run(message_size(args.database_url, campaign_id, secret))
    print(
        f"  schema + COPY of {n:,} subscribers: {time.perf_counter() - t:.1f}s; message size {size:,} bytes"
    )

    redis.Redis.from_url(args.redis_url).flushdb()
    sink = start_sink(workdir)
    inherited = {k: v for k, v in os.environ.items() if not (args.defaults and k.startswith("EMAILKIT_"))}
    # Where things are is set in both modes; how fast to go only without --defaults.
    env = worker_env(
        inherited, args.database_url, args.redis_url, secret, sink, {} if args.defaults else tuning(args)
    )
    settings_env = {k: v for k, v in env.items() if k.startswith("EMAILKIT_")}
    if args.defaults:
        workers = start_workers(env, None, None, workdir)
    else:
        workers = start_workers(env, args.processes, args.threads, workdir)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        workers.wait_ready()
        if args.defaults:
            read_defaults(args, workers)
        source_before = run_smtp_source(sink, args.source_messages, size, args.source_sessions)
        print(f"  smtp-source before the campaign: {source_before:,.0f} msg/s")
        pids = workers.pids()
        labels = workers.labels()
        worker_pids = workers.worker_pids()
        if args.profile is not None:
            profiler = start_profiler(args.profile, worker_pids[0])
        sink_before = sink.messages()
        cpu_before = {pid: cpu_seconds(pid) for pid in [*pids, sink.proc.pid]}
        bench_cpu = time.process_time()
        print(
            f"  {args.processes} worker process(es) x {args.threads} threads, SMTP pool {args.pool_size}, "
            f"batches of {args.batch_size}: startCampaign ...",
            flush=True,
        )
        run = asyncio.run(send_campaign(args.database_url, settings_env, campaign_id, api_key, workers))
        bench_cpu = time.process_time() - bench_cpu
        cpu_after = {pid: cpu_seconds(pid) for pid in [*pids, sink.proc.pid]}
        rss = {pid: peak_rss_mb(pid) for pid in pids}
        backends = asyncio.run(postgres_backends(args.database_url))
        pg_cpu = sum(cpu_seconds(pid) for pid in backends)
        time.sleep(0.3)
        sink_seen = sink.messages() - sink_before
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
            profiler = None
        workers.stop()
        source_after = run_smtp_source(sink, args.source_messages, size, args.source_sessions)
    finally:
        if profiler is not None:
            profiler.kill()
        workers.stop()
        sink.proc.terminate()
        sink.proc.wait(timeout=10)

    rate = run.sent / run.seconds
    source = max(source_before, source_after)
    print()
    print(f"  campaign: {run.sent:,} sent in {run.seconds:.2f}s from startCampaign to FINISHED")
    print(f"  ledger: {run.statuses}; smtp-sink received {sink_seen:,} messages")
    print(f"  smtp-source after the campaign: {source_after:,.0f} msg/s")
    print()
    print(f"  emailkit                      {rate:9,.0f} emails/s")
    print(
        f"  postfix smtp-source           {source:9,.0f} msg/s  ({args.source_sessions} sessions, -l {size})"
    )
    print(f"  ratio                         {rate / source:9.0%}   (target: at least 45%)")
    print()
    print("  CPU seconds from startCampaign to FINISHED, peak RSS:")
    for pid in pids:
        cpu = cpu_after[pid] - cpu_before[pid]
        print(f"    {labels[pid]:<34} pid {pid:<7} {cpu:7.2f} s   {rss[pid]:6.1f} MB peak RSS")
    sink_cpu = cpu_after[sink.proc.pid] - cpu_before[sink.proc.pid]
    print(f"    {'smtp-sink':<34} pid {sink.proc.pid:<7} {sink_cpu:7.2f} s")
    print(f"    {f'PostgreSQL backends ({len(backends)})':<34} {'':11} {pg_cpu:7.2f} s")
    print(f"    {'this process (API + polling)':<34} pid {os.getpid():<7} {bench_cpu:7.2f} s")
    worker_cpu = sum(cpu_after[p] - cpu_before[p] for p in worker_pids)
    print(f"  worker CPU per email: {worker_cpu / max(run.sent, 1) * 1e6:.0f} µs")
    check_delivered(run, sink_seen, n)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
