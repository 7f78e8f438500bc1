"""Automation flows end to end (issue 14): N people entering a SUBSCRIBED flow (SEND → WAIT 10 s → SEND) through
one CSV import, both SEND steps into postfix's smtp-sink with `emailkit worker` processes, a campaign of the same
size to the same list in the same run, and postfix's smtp-source into the same sink; with --import-cost, what an
ACTIVE SUBSCRIBED flow on its list costs the 1M-row import.

Prints figures (not a test). Needs PostgreSQL, Redis and the Debian package postfix (smtp-sink and smtp-source;
the postfix daemon itself stays stopped). The schema of the database named by --database-url is DROPPED and
re-created: point it at a scratch database owned by the role emailkit runs as (BENCHMARKS.md says how).

    python bench/flows.py [--subscribers 100000] [--runs 1] [--wait-seconds 10] [--processes 2] [--threads 4]
                          [--pool-size 40] [--batch-size 1000]
                          [--database-url postgresql://emailkit_app@127.0.0.1:5432/bench_flows]
                          [--admin-url postgresql://postgres@127.0.0.1:5432/bench_flows]
                          [--redis-url redis://127.0.0.1:6382/0] [--profile worker.txt]
    python bench/flows.py --import-cost [--rows 1000000] [--runs 3] [--database-url ...] [--admin-url ...]

What a run of the send does:

1. the schema is recreated by the migrations with one list (bench/import.py's reset); a SUBSCRIBED flow on it
   is published, SEND → WAIT → SEND, both SENDs the personalised MJML newsletter of bench/send.py (5 tracked
   links, an open pixel); a campaign of the same newsletter to the same list is created (DRAFT);
2. smtp-sink listens on a free port; `emailkit worker --processes P --threads T` starts with the smtp provider
   pointed at it, as bench/send.py starts it; smtp-source sends messages of the same size into the sink;
3. a CSV of N people is imported into the list by the import service (the job `emailkit import` runs): all of
   them enter the flow in the import's own transaction; that INSERT … SELECT is also timed on its own; then
   ANALYZE, as autovacuum would soon after (this machine's PostgreSQL runs without it);
4. the workers' ticker claims the due runs and the workers send step one, park the runs for the wait and send
   step two; the clock runs from the import's commit until every run has COMPLETED;
5. VACUUM ANALYZE after the flow's writes (autovacuum again), then `startCampaign` to the same list, timed to
   FINISHED as bench/send.py does;
6. smtp-source again; the ledgers (every flow step and campaign delivery SENT) and the sink's counter (3N
   messages) are checked.

Rates: step one, N / (its last send - the import's commit); step two, N / (its last send - its first start);
the flow, 2N / the time a SEND step had work (the union of the two steps' spans: at 20k the runs sit out part
of the wait with nothing to send, at 100k they do not); the campaign, N / (FINISHED - startCampaign); each also
as a ratio to smtp-source (the faster of its two runs). Worker and PostgreSQL CPU are per phase (from /proc);
peak RSS is each worker process's high-water mark (VmHWM) at the end. Before each measured phase the script
waits for the 1-minute load average to fall below 1.5 (10 minutes at most; then it measures anyway and says so).

--import-cost: bench/import.py's local import of a generated file of --rows rows into a fresh schema, --runs
times without a flow and --runs times with an ACTIVE SUBSCRIBED flow on the import's list (everyone enters it),
in turn (A B B A ...), a CHECKPOINT before each (through --admin-url, which may run it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from benchlib import connect_as_default_workspace, in_default_workspace, wait_for_quiet
from send import add_worker_options, postgres_backends, send_campaign, tuning
from send_data import NEWSLETTER, SUBJECT, asyncpg_dsn, create_campaign, message_size
from send_processes import (
    Workers,
    cpu_seconds,
    peak_rss_mb,
    run_smtp_source,
    start_profiler,
    start_sink,
    start_workers,
    worker_env,
)

from emailkit.db.engine import Database

# bench/import.py (a keyword as a module name): its generated file, its reset and its import of a local file.
bench_import = importlib.import_module("import")

DEFAULT_DATABASE_URL = "postgresql://emailkit_app@127.0.0.1:5432/bench_flows"


DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/bench_flows"


DEFAULT_REDIS_URL = "redis://127.0.0.1:6382/0"


# bench/import.py's reset makes this list, and its import subscribes everyone to it.
LIST_ID = 1


STEPS = ("one", "two")


WAIT_STEP = "pause"


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def create_flow(db: Database, list_id: int, wait_seconds: int) -> int:
    """The welcome series, published: SEND `one` → WAIT → SEND `two`, both the newsletter as a template."""
    from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
    from emailkit.domain.automation import flows

    async with db.transaction() as s:
        template = Template(
            name="Newsletter (benchmark)",
            kind=TemplateKind.CAMPAIGN,
            subject=SUBJECT,
            body=NEWSLETTER,
            format=ContentFormat.MJML,
        )
        s.add(template)
        await s.flush()
        send = {
            "type": "SEND",
            "templateId": template.id,
            "fromEmail": "news@news.example.com",
            "fromName": "Example News",
        }
        definition = {
            "trigger": {"type": "SUBSCRIBED", "listId": list_id},
            "steps": [
                {**send, "key": STEPS[0], "next": WAIT_STEP},
                {"key": WAIT_STEP, "type": "WAIT", "waitSeconds": wait_seconds, "next": STEPS[1]},
                {**send, "key": STEPS[1]},
            ],
        }
        row = await flows.create_flow(
            s, flows.FlowInput(name="Welcome series (benchmark)", definition=definition)
        )
        await flows.publish_flow(s, row.id)
        return row.id


@contextmanager
def timed_entry() -> Iterator[list[float]]:
    """Seconds spent entering SUBSCRIBED flows (the import calls it in its transaction), one figure a call."""
    from emailkit.domain.automation import entry

    original = entry.subscribed
    spent: list[float] = []

    async def timed(*args: Any, **kwargs: Any) -> int:
        start = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    entry.subscribed = timed
    try:
        yield spent
    finally:
        entry.subscribed = original


@dataclass
class Imported:
    seconds: float
    entry_seconds: float
    runs: int
    # When it committed (everyone had entered), by the wall clock the workers' timestamps use.
    committed_at: datetime


async def import_people(
    db: Database, url: str, path: Path, size: int, rows: int, flow_id: int | None
) -> Imported:
    """bench/import.py's local import of PATH (SIZE bytes) into the list; checks that every row was inserted
    and, with a flow, that everyone entered it."""
    with timed_entry() as spent:
        result, probe, _ = await bench_import.import_file(db, path, size, "local")
    seconds = time.perf_counter() - probe.started
    committed_at = datetime.now(UTC)
    if result.inserted != rows:
        sys.exit(f"import: {result.status} {result.error} inserted {result.inserted} of {rows}")
    runs = 0
    if flow_id is not None:
        conn = await connect_as_default_workspace(asyncpg_dsn(url))
        try:
            runs = int(await conn.fetchval("SELECT count(*) FROM flow_runs WHERE flow_id = $1", flow_id))
        finally:
            await conn.close()
        if runs != rows:
            sys.exit(f"{runs} runs entered the flow, expected {rows}")
    return Imported(seconds, sum(spent), runs, committed_at)


async def maintain(url: str, admin_url: str | None, statement: str) -> None:
    """ANALYZE or VACUUM ANALYZE where autovacuum would have (this machine's PostgreSQL runs without it): after
    an import, and after the flow's churn before the campaign. Through ADMIN_URL when given (the catalogs too)."""
    conn = await connect_as_default_workspace(asyncpg_dsn(admin_url or url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def import_into(url: str, path: Path, size: int, rows: int, flow_id: int | None) -> Imported:
    db = Database(sqlalchemy_url(url))
    try:
        return await import_people(db, url, path, size, rows, flow_id)
    finally:
        await db.dispose()


# --- the send ---------------------------------------------------------------------------------------------


class Phase:
    """CPU of the worker processes and of the database's backends over one measured phase (and, with
    PROFILE, py-spy on one worker process)."""

    def __init__(self, url: str, workers: Workers, profile: Path | None) -> None:
        self.url, self.workers = url, workers
        self.worker_pids = workers.worker_pids() or [workers.proc.pid]
        self.profiler = start_profiler(profile, self.worker_pids[0]) if profile is not None else None
        self.workers_before = {pid: cpu_seconds(pid) for pid in self.worker_pids}
        self.backends_before = asyncio.run(self._backends())

    async def _backends(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in await postgres_backends(self.url)}

    async def end(self) -> tuple[float, float]:
        """Worker and PostgreSQL CPU seconds since the start."""
        workers = sum(cpu_seconds(pid) - self.workers_before[pid] for pid in self.worker_pids)
        backends = await self._backends()
        database = sum(cpu - self.backends_before.get(pid, 0.0) for pid, cpu in backends.items())
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            self.profiler.wait(timeout=60)
        return workers, database


@dataclass
class StepSpan:
    first_start: datetime
    last_finish: datetime
    sent: int


async def step_spans(conn: Any, flow_id: int) -> dict[str, StepSpan]:
    rows = await conn.fetch(
        "SELECT step_key, min(started_at) AS first, max(finished_at) AS last, "
        "count(*) FILTER (WHERE status = 'SENT') AS sent "
        "FROM flow_step_runs WHERE flow_id = $1 AND step_key = ANY($2::text[]) GROUP BY step_key",
        flow_id,
        list(STEPS),
    )
    return {r["step_key"]: StepSpan(r["first"], r["last"], int(r["sent"])) for r in rows}


async def wait_lateness(url: str, flow_id: int, wait_seconds: int) -> tuple[float, float]:
    """How long after its end each run's WAIT was over (the run moved on): the median and the worst."""
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late) AS median, max(late) AS worst FROM ("
            "SELECT extract(epoch FROM finished_at - started_at) - $3 AS late FROM flow_step_runs "
            "WHERE flow_id = $1 AND step_key = $2 AND finished_at IS NOT NULL) AS waits",
            flow_id,
            WAIT_STEP,
            wait_seconds,
        )
        return float(row["median"]), float(row["worst"])
    finally:
        await conn.close()


async def run_flow(url: str, flow_id: int, n: int, workers: Workers) -> dict[str, StepSpan]:
    """Wait until every run of the flow has finished, reporting progress; then each SEND step's span."""
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        start = time.perf_counter()
        next_report, last, last_change = start + 5, -1, start
        while True:
            row = await conn.fetchrow("SELECT completed, exited FROM flows WHERE id = $1", flow_id)
            done = int(row["completed"]) + int(row["exited"])
            now = time.perf_counter()
            if done >= n:
                break
            if workers.proc.poll() is not None:
                sys.exit(f"the workers exited:\n{workers.log.read_text()[-3000:]}")
            if done != last:
                last, last_change = done, now
            elif now - last_change > 180:
                sys.exit(f"no run finished for 3 minutes ({done} of {n}):\n{workers.log.read_text()[-3000:]}")
            if now >= next_report:
                sent = dict(
                    await conn.fetch(
                        "SELECT step_key, sent FROM flow_step_stats WHERE flow_id = $1 ORDER BY step_key",
                        flow_id,
                    )
                )
                print(
                    f"    {now - start:6.1f}s  sent: step one {sent.get(STEPS[0], 0):>7,}, "
                    f"step two {sent.get(STEPS[1], 0):>7,}; runs finished {done:,} of {n:,}",
                    flush=True,
                )
                next_report += 5
            await asyncio.sleep(0.1)
        return await step_spans(conn, flow_id)
    finally:
        await conn.close()


async def flow_deliveries(url: str) -> dict[str, int]:
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE flow_run_id IS NOT NULL GROUP BY status"
        )
        return {r["status"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


@dataclass
class Figures:
    """One run's figures (rates in messages per second, CPU in µs per message, RSS in MB)."""

    loads: list[str] = field(default_factory=list)
    source: float = 0.0
    import_seconds: float = 0.0
    entry_seconds: float = 0.0
    step_one: float = 0.0
    step_two: float = 0.0
    flow: float = 0.0
    flow_end_to_end: float = 0.0
    campaign: float = 0.0
    wait_late_median: float = 0.0
    wait_late_worst: float = 0.0
    flow_worker_cpu: float = 0.0
    campaign_worker_cpu: float = 0.0
    flow_database_cpu: float = 0.0
    campaign_database_cpu: float = 0.0
    peak_rss: list[float] = field(default_factory=list)


def flow_rates(spans: dict[str, StepSpan], committed_at: datetime, n: int, figures: Figures) -> None:
    one, two = spans[STEPS[0]], spans[STEPS[1]]
    one_seconds = (one.last_finish - committed_at).total_seconds()
    two_seconds = (two.last_finish - two.first_start).total_seconds()
    # The second step's span, less what of it overlaps the first's: the time a SEND step had work.
    busy = one_seconds + max(0.0, (two.last_finish - max(two.first_start, one.last_finish)).total_seconds())
    figures.step_one = n / one_seconds
    figures.step_two = n / two_seconds
    figures.flow = 2 * n / busy
    figures.flow_end_to_end = 2 * n / (two.last_finish - committed_at).total_seconds()
    if one.sent != n or two.sent != n:
        sys.exit(f"steps SENT: one {one.sent}, two {two.sent}; expected {n} each")


def measure(what: str, figures: Figures) -> None:
    note = wait_for_quiet()
    figures.loads.append(f"{what}: {note}")
    print(f"  {what} ({note}) ...", flush=True)


def phase_profile(args: argparse.Namespace, phase: str) -> Path | None:
    profile: Path | None = args.profile
    if profile is None:
        return None
    return profile.with_name(f"{profile.stem}-{phase}{profile.suffix}")


def send_run(args: argparse.Namespace) -> Figures:
    """One run of the send: the import into the flow, the flow's two steps, the campaign, smtp-source around."""
    n = args.subscribers
    url = args.database_url
    figures = Figures()
    workdir = Path(tempfile.mkdtemp(prefix="emailkit-bench-flows-"))
    secret = secrets.token_urlsafe(32)
    csv = workdir / "people.csv"
    bench_import.generate(csv, n)

    async def prepare() -> tuple[int, int, str, int]:
        db = await bench_import.reset(sqlalchemy_url(url), args.admin_url)
        try:
            flow_id = await create_flow(db, LIST_ID, args.wait_seconds)
        finally:
            await db.dispose()
        campaign_id, api_key = await create_campaign(url, LIST_ID)
        return flow_id, campaign_id, api_key, await message_size(url, campaign_id, secret)

    flow_id, campaign_id, api_key, size = asyncio.run(prepare())
    redis.Redis.from_url(args.redis_url).flushdb()
    sink = start_sink(workdir)
    env = worker_env(os.environ, url, args.redis_url, secret, sink, tuning(args))
    settings_env = {k: v for k, v in env.items() if k.startswith("EMAILKIT_")}
    workers = start_workers(env, args.processes, args.threads, workdir)
    try:
        workers.wait_ready()
        measure("smtp-source", figures)
        source_before = run_smtp_source(sink, args.source_messages, size, args.source_sessions)
        print(f"  smtp-source before: {source_before:,.0f} msg/s ({size:,}-byte messages)")
        sink_before = sink.messages()

        measure(f"import of {n:,} people into the flow's list", figures)
        phase = Phase(url, workers, phase_profile(args, "flow"))
        imported = asyncio.run(import_into(url, csv, csv.stat().st_size, n, flow_id))
        figures.import_seconds, figures.entry_seconds = imported.seconds, imported.entry_seconds
        print(
            f"  imported {n:,} people in {imported.seconds:.2f} s ({n / imported.seconds:,.0f} rows/s); "
            f"all {imported.runs:,} entered the flow at its commit (entering them: {imported.entry_seconds:.2f} s "
            f"of it); the flow runs ...",
            flush=True,
        )
        # Its statistics, as autovacuum would gather them a little later (the flow is already running).
        asyncio.run(maintain(url, args.admin_url, "ANALYZE"))
        spans = asyncio.run(run_flow(url, flow_id, n, workers))
        figures.flow_worker_cpu, figures.flow_database_cpu = (
            x / (2 * n) * 1e6 for x in asyncio.run(phase.end())
        )
        flow_rates(spans, imported.committed_at, n, figures)
        figures.wait_late_median, figures.wait_late_worst = asyncio.run(
            wait_lateness(url, flow_id, args.wait_seconds)
        )
        statuses = asyncio.run(flow_deliveries(url))
        if statuses != {"SENT": 2 * n}:
            sys.exit(f"flow deliveries {statuses}, expected {2 * n} SENT")
        print(
            f"  flow: step one {figures.step_one:,.0f}/s, step two {figures.step_two:,.0f}/s, "
            f"both {figures.flow:,.0f}/s ({figures.flow_end_to_end:,.0f}/s end to end, the wait included)"
        )

        asyncio.run(maintain(url, args.admin_url, "VACUUM ANALYZE"))
        measure(f"campaign to the same {n:,} people", figures)
        phase = Phase(url, workers, phase_profile(args, "campaign"))
        run = asyncio.run(send_campaign(url, settings_env, campaign_id, api_key, workers))
        figures.campaign_worker_cpu, figures.campaign_database_cpu = (
            x / n * 1e6 for x in asyncio.run(phase.end())
        )
        figures.campaign = run.sent / run.seconds
        if run.statuses.get("SENT", 0) != n:
            sys.exit(f"campaign deliveries {run.statuses}, expected {n} SENT")
        print(f"  campaign: {run.sent:,} sent in {run.seconds:.2f} s ({figures.campaign:,.0f}/s)")
        figures.peak_rss = [peak_rss_mb(pid) for pid in phase.worker_pids]
        time.sleep(0.3)
        sink_seen = sink.messages() - sink_before
        workers.stop()
        measure("smtp-source again", figures)
        source_after = run_smtp_source(sink, args.source_messages, size, args.source_sessions)
        print(f"  smtp-source after: {source_after:,.0f} msg/s")
        figures.source = max(source_before, source_after)
    finally:
        workers.stop()
        sink.proc.terminate()
        sink.proc.wait(timeout=10)
    if sink_seen != 3 * n:
        sys.exit(f"the sink saw {sink_seen} messages, expected {3 * n}")
    shutil.rmtree(workdir, ignore_errors=True)
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def print_send_summary(args: argparse.Namespace, runs: list[Figures]) -> None:
    n = args.subscribers

    def row(label: str, values: list[float], unit: str = "/s", scale: str = ",.0f") -> None:
        each = ", ".join(format(v, scale) for v in values)
        print(f"  {label:<44} {format(median(values), scale):>9} {unit:<6} ({each})")

    print()
    print(
        f"  {n:,} people, {args.processes} worker process(es) x {args.threads} threads, SMTP pool "
        f"{args.pool_size}, batches of {args.batch_size}, a {args.wait_seconds}-second wait; "
        f"medians of {len(runs)} run(s), each run in brackets"
    )
    row("import (the CSV job, entry included)", [r.import_seconds for r in runs], "s", ".2f")
    row("  of which entering the flow", [r.entry_seconds for r in runs], "s", ".2f")
    row("flow step one", [r.step_one for r in runs])
    row("flow step two", [r.step_two for r in runs])
    row("flow, both steps", [r.flow for r in runs])
    row("flow, end to end (the wait included)", [r.flow_end_to_end for r in runs])
    row("the wait over, after its end: median", [r.wait_late_median for r in runs], "s", ".2f")
    row("  the latest", [r.wait_late_worst for r in runs], "s", ".2f")
    row("campaign", [r.campaign for r in runs])
    row("postfix smtp-source", [r.source for r in runs], "msg/s")
    row("flow / smtp-source", [r.flow / r.source for r in runs], "", ".0%")
    row("campaign / smtp-source", [r.campaign / r.source for r in runs], "", ".0%")
    row("flow / campaign (target: at least 80%)", [r.flow / r.campaign for r in runs], "", ".0%")
    row("worker CPU per email, flow", [r.flow_worker_cpu for r in runs], "µs")
    row("worker CPU per email, campaign", [r.campaign_worker_cpu for r in runs], "µs")
    row("PostgreSQL CPU per email, flow", [r.flow_database_cpu for r in runs], "µs")
    row("PostgreSQL CPU per email, campaign", [r.campaign_database_cpu for r in runs], "µs")
    peaks = [max(r.peak_rss) for r in runs if r.peak_rss]
    row("worker peak RSS (the larger process)", peaks, "MB", ".1f")
    for i, r in enumerate(runs, 1):
        print(f"  run {i}: " + "; ".join(r.loads))


# --- the import's cost ------------------------------------------------------------------------------------


async def import_cost(args: argparse.Namespace) -> None:
    rows = args.rows
    url = args.database_url
    seconds: dict[bool, list[float]] = {False: [], True: []}
    entering: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "people.csv"
        bench_import.generate(path, rows)
        size = path.stat().st_size
        print(f"  {rows:,} rows, {size / (1 << 20):.1f} MiB generated")
        for i in range(args.runs):
            # A B, then B A: a drift of the machine weighs on both alike.
            for with_flow in (False, True) if i % 2 == 0 else (True, False):
                db = await bench_import.reset(sqlalchemy_url(url), args.admin_url)
                try:
                    flow_id = await create_flow(db, LIST_ID, args.wait_seconds) if with_flow else None
                finally:
                    await db.dispose()
                note = wait_for_quiet()
                imported = await import_into(url, path, size, rows, flow_id)
                seconds[with_flow].append(imported.seconds)
                what = f"with the flow ({imported.runs:,} entered)" if with_flow else "no flow"
                if with_flow:
                    entering.append(imported.entry_seconds)
                    what += f", entering {imported.entry_seconds:.2f} s of it"
                print(f"  run {i + 1}, {what}: {imported.seconds:.2f} s  [{note}]", flush=True)
    plain, flowing = seconds[False], seconds[True]
    pairs = [b / a for a, b in zip(plain, flowing, strict=True)]
    print()
    print(f"  import of {rows:,} rows, {args.runs} run(s) each (median, then each run):")
    print(f"    no flow                     {median(plain):7.2f} s  ({', '.join(f'{x:.2f}' for x in plain)})")
    print(
        f"    ACTIVE SUBSCRIBED flow      {median(flowing):7.2f} s  ({', '.join(f'{x:.2f}' for x in flowing)})"
    )
    print(
        f"      of which entering         {median(entering):7.2f} s  ({', '.join(f'{x:.2f}' for x in entering)})"
    )
    print(
        f"    with / without              {median(flowing) / median(plain):7.2f}    "
        f"(run by run: {', '.join(f'{x:.2f}' for x in pairs)}; target: at most 1.30)"
    )


# --- the command ------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000, help="people imported into the flow")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of the send; of each import with --import-cost"
    )
    parser.add_argument("--wait-seconds", type=int, default=10, help="the flow's WAIT between its two SENDs")
    add_worker_options(parser)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a superuser's URL of the same database, for the CHECKPOINT before each import and the ANALYZEs "
        "that autovacuum would run",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy record one worker process during the flow and during the campaign, into NAME-flow and "
        "NAME-campaign beside this path (collapsed stacks)",
    )
    parser.add_argument(
        "--import-cost",
        action="store_true",
        help="measure what entering the flow costs a large import instead of the send",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the import with --import-cost")
    return parser.parse_args()


@in_default_workspace
def main() -> None:
    args = parse_args()
    print(
        f"emailkit flows benchmark: {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if args.import_cost:
        asyncio.run(import_cost(args))
        return
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1} of {args.runs}: {args.subscribers:,} people")
        runs.append(send_run(args))
    print_send_summary(args, runs)


if __name__ == "__main__":
    main()
