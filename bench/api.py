"""The GraphQL API under a frontend app's reads, with wrk: requests per second, latency, errors, CPU per request.

Prints figures (not a test). The database named by --database-url is wiped and loaded (unless --reuse finds
the data already there) with the same generator as bench/segments.py:

* 100,000 subscribers with 5 attributes (city, plan, age, signup date, language; a few with tags) on 3 lists;
* 50 campaigns, each delivered to 2% of subscribers, with their stats counters and 5 clicked links;
* 1,000,000 events in monthly partitions.

Then, for each number of API processes (--workers, default 1 and 2), it starts `emailkit serve --workers N`
exactly as the README does (PostgreSQL, a Redis broker; no tuning variable except a per-key rate limit far
above the load, since every wrk connection uses one key), and runs each read with wrk at each number of
connections (--connections, default 10 and 200) for --duration seconds, after a short warm-up. Each read is
checked once before it is timed: HTTP 200, data, no errors.

    python bench/api.py [--database-url postgresql://postgres@127.0.0.1:5432/ek_api] [--reuse]
                        [--workers 1,2] [--connections 10,200] [--duration 20] [--reads page,search,...]
    python bench/api.py --reuse --profile page      # pyinstrument over the app in-process, 300 requests

Columns: rps; p50 and p99 latency; errors = non-2xx answers plus socket errors; time-outs = requests with no
answer within wrk's --timeout (10 s); CPU per request, in microseconds, of the API processes and of every
PostgreSQL process (from /proc, over the timed run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import connect_as_default_workspace, free_port, process_cpu, wait_ready
from segments import asyncpg_dsn, load, loaded, sqlalchemy_url

SUBSCRIBERS = 100_000
EVENTS = 1_000_000
CAMPAIGNS = 50
WRK_TIMEOUT = "10s"
EMAILKIT = str(Path(sys.executable).parent / "emailkit")

SUBSCRIBER_FIELDS = """
  cursor
  node {
    id email name status createdAt attributes
    subscriptions { status list { id name } }
  }
"""
STATS_FIELDS = (
    "recipients sent delivered bounced complained opens uniqueOpens clicks uniqueClicks unsubscribed"
)


def page_query(arguments: str, *, total: bool = False) -> str:
    return (
        f"query {{ subscribers({arguments}) {{ edges {{ {SUBSCRIBER_FIELDS} }} "
        f"pageInfo {{ hasNextPage endCursor }} {'totalCount' if total else ''} }} }}"
    )


def reads(campaign_id: str) -> dict[str, dict[str, Any]]:
    """Every timed read: a name and its GraphQL request body."""
    return {
        "page": {"query": page_query("first: 50")},
        "page_count": {"query": page_query("first: 50", total=True)},
        "search": {"query": page_query('first: 50, search: "user123"')},
        "search_count": {"query": page_query('first: 50, search: "user123"', total=True)},
        "filter": {
            "query": page_query('first: 50, filter: {attribute: {path: "city", op: EQ, value: "Bonn"}}'),
        },
        "segment": {
            "query": 'query { segmentPreview(filter: {and: [{attribute: {path: "plan", op: EQ, value: "team"}}, '
            '{attribute: {path: "age", op: GTE, value: 60}}]}) { count sample { id email } userErrors { code } } }'
        },
        "campaign": {
            "query": "query($id: ID!) { campaign(id: $id) { id name subject status createdAt startedAt "
            f"finishedAt stats {{ {STATS_FIELDS} }} links {{ url clicks uniqueClicks }} lists {{ id name }} }} }}",
            "variables": {"id": campaign_id},
        },
        "campaigns": {
            "query": "query { campaigns(first: 25) { edges { node { id name subject status createdAt "
            f"stats {{ {STATS_FIELDS} }} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        },
    }


# --- data -------------------------------------------------------------------------------------------------


async def add_counters(url: str) -> None:
    """Campaign stats counters and clicked links, as the feedback loop would have left them, plus lists."""
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO campaign_stats (campaign_id, delivered, bounced, complained, opens, unique_opens, clicks, "
            "unique_clicks, unsubscribed, updated_at) "
            "SELECT campaign_id, count(*) FILTER (WHERE type = 'DELIVERED'), 0, 0, "
            "count(*) FILTER (WHERE type = 'OPEN'), count(DISTINCT subscriber_id) FILTER (WHERE type = 'OPEN'), "
            "count(*) FILTER (WHERE type = 'CLICK'), count(DISTINCT subscriber_id) FILTER (WHERE type = 'CLICK'), "
            "0, now() FROM events GROUP BY campaign_id"
        )
        await conn.execute(
            "UPDATE campaigns c SET recipients_count = d.n, sent_count = d.n "
            "FROM (SELECT campaign_id, count(*) AS n FROM deliveries GROUP BY campaign_id) d WHERE d.campaign_id = c.id"
        )
        await conn.execute(
            "INSERT INTO campaign_links (campaign_id, url_hash, url, clicks, unique_clicks) "
            "SELECT c.id, md5(c.id || '/' || k), 'https://example.com/article/' || k, 500 / k, 400 / k "
            "FROM campaigns c, generate_series(1, 5) k"
        )
        await conn.execute("INSERT INTO campaign_lists (campaign_id, list_id) SELECT id, 1 FROM campaigns")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def ensure_data(url: str, reuse: bool) -> None:
    if reuse and await loaded(url, SUBSCRIBERS):
        print("reusing the loaded database")
        return
    await load(url, SUBSCRIBERS, EVENTS, datetime.now(UTC), campaigns=CAMPAIGNS, language=True)
    await add_counters(url)


# --- the server -------------------------------------------------------------------------------------------


def environment(url: str, redis_url: str, home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILKIT_")}
    env.update(
        EMAILKIT_HOME=home,
        EMAILKIT_DATABASE_URL=sqlalchemy_url(url),
        EMAILKIT_BROKER_URL=redis_url,
        EMAILKIT_REDIS_URL=redis_url,
        # One key carries every wrk connection; the default 600/minute would answer most of them 429.
        EMAILKIT_API_RATE_LIMIT="1000000/minute",
        EMAILKIT_SECRET_KEY=secrets.token_urlsafe(48),
    )
    return env


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [EMAILKIT, "create-api-key", "--name", f"bench-{time.time_ns()}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1].strip()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = process_cpu(pid)
        except OSError:
            pass
    return out


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process that started in between counts from zero, and one that
    ended is lost (PostgreSQL backends live as long as the pool keeps their connection)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# --- wrk --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    requests: int
    api_us: float
    pg_us: float


def wrk_script(path: Path, body: dict[str, Any], key: str) -> None:
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(base: str, script: Path, connections: int, seconds: int, server_pids: list[int]) -> Result:
    threads = min(2, connections)
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        WRK_TIMEOUT,
    ]
    command += ["--latency", "-s", str(script), f"{base}/graphql"]
    api0, pg0 = cpu_of(server_pids), cpu_of(postgres_pids())
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    api, pg = cpu_spent(api0, cpu_of(server_pids)), cpu_spent(pg0, cpu_of(postgres_pids()))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The distribution's own lines only: "77.50%" ends many a line of wrk's thread statistics.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    timeouts = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += int(m.group(1)) + int(m.group(2)) + int(m.group(3))
        timeouts = int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    n = max(requests, 1)
    return Result(rps, p50, p99, errors, timeouts, requests, api / n * 1e6, pg / n * 1e6)


def check(base: str, key: str, name: str, body: dict[str, Any]) -> None:
    r = httpx.post(f"{base}/graphql", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    payload = r.json()
    if r.status_code != 200 or payload.get("errors") or not payload.get("data"):
        sys.exit(f"read {name} failed: HTTP {r.status_code} {json.dumps(payload)[:500]}")


def campaign_id(base: str, key: str) -> str:
    r = httpx.post(
        f"{base}/graphql",
        json={"query": "query { campaigns(first: 30) { edges { node { id } } } }"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return str(r.json()["data"]["campaigns"]["edges"][-1]["node"]["id"])


def bench_workers(args: argparse.Namespace, env: dict[str, str], key: str, workers: int) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [EMAILKIT, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(base, server)
        # --workers N: every child must be up before the first timed run.
        deadline = time.monotonic() + 60
        while (
            len(descendants(server.pid)) < 1 + workers + (1 if workers > 1 else 0)
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        pids = descendants(server.pid)
        all_reads = reads(campaign_id(base, key))
        chosen = args.reads.split(",") if args.reads else list(all_reads)
        print(f"\n## {workers} API process{'es' if workers > 1 else ''}")
        print(
            "| read | connections | rps | p50 ms | p99 ms | errors | time-outs | API CPU µs/req | PG CPU µs/req |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for name in chosen:
                body = all_reads[name]
                check(base, key, name, body)
                script = Path(tmp) / f"{name}.lua"
                wrk_script(script, body, key)
                run_wrk(base, script, 10, 2, pids)  # warm-up: connections, caches, the planner
                for connections in args.connections:
                    r = run_wrk(base, script, connections, args.duration, pids)
                    print(
                        f"| {name} | {connections} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.0f} | {r.errors} "
                        f"| {r.timeouts} | {r.api_us:,.0f} | {r.pg_us:,.0f} |",
                        flush=True,
                    )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


# --- profile ----------------------------------------------------------------------------------------------


async def profile(env: dict[str, str], key: str, name: str, n: int) -> None:
    """pyinstrument over the ASGI app in this process: where one read's time goes, without uvicorn."""
    from pyinstrument import Profiler

    from emailkit.app import create_app
    from emailkit.settings import Settings

    settings = Settings(
        **{k.removeprefix("EMAILKIT_").lower(): v for k, v in env.items() if k.startswith("EMAILKIT_")}
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post(
                "/graphql",
                json={"query": "query { campaigns(first: 30) { edges { node { id } } } }"},
                headers=headers,
            )
            body = reads(str(r.json()["data"]["campaigns"]["edges"][-1]["node"]["id"]))[name]
            for _ in range(20):
                await client.post("/graphql", json=body, headers=headers)
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            t0 = time.perf_counter()
            profiler.start()
            for _ in range(n):
                r = await client.post("/graphql", json=body, headers=headers)
            profiler.stop()
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200 and not r.json().get("errors"), r.text[:500]
    print(f"{name}: {elapsed / n * 1e6:,.0f} µs per request in process (profiled, {n} requests)")
    print(profiler.output_text(unicode=True, color=False, show_all=False, timeline=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ek_api")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--reuse", action="store_true", help="keep the data an earlier run loaded")
    parser.add_argument("--workers", default="1,2", help="API process counts, comma-separated")
    parser.add_argument("--connections", default="10,200", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--reads", default="", help="comma-separated subset of: " + ", ".join(reads("x")))
    parser.add_argument(
        "--profile", metavar="READ", help="profile one read in-process instead of running wrk"
    )
    parser.add_argument("--profile-requests", type=int, default=300)
    args = parser.parse_args()

    asyncio.run(ensure_data(args.database_url, args.reuse))
    with tempfile.TemporaryDirectory() as home:
        env = environment(args.database_url, args.redis_url, home)
        key = create_key(env)
        if args.profile:
            asyncio.run(profile(env, key, args.profile, args.profile_requests))
            return
        load_avg = os.getloadavg()[0]
        print(
            f"{SUBSCRIBERS:,} subscribers, load average {load_avg:.2f} before the runs, {args.duration} s per run"
        )
        for workers in (int(w) for w in args.workers.split(",")):
            bench_workers(args, env, key, workers)


if __name__ == "__main__":
    main()
