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
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import redis
from benchlib import find_tool, free_port, process_cpu

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/ek_h14"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
PUBLIC_URL = "https://news.example.com"
# The worker's start-up banner: "  workers     2 worker processes x 4 threads" and "smtp via ..., pool 40".
BANNER_WORKERS = re.compile(r"^\s+workers\s+(\d+) worker process(?:es)? x (\d+) threads$", re.M)
BANNER_POOL = re.compile(r"^\s+provider\s+smtp via .*, pool (\d+)$", re.M)

CITIES = ("Berlin", "Lisbon", "Oslo", "Toronto", "Osaka", "Lagos", "Lima", "Perth")
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Donald")

ARTICLE = """    <mj-section padding="10px 0">
      <mj-column>
        <mj-image src="https://cdn.example.com/articles/{n}.jpg" alt="Article {n}" width="560px" />
        <mj-text font-size="18px" font-weight="bold">{n}. {title}</mj-text>
        <mj-text>{summary} Picked for readers in {{{{ subscriber.attributes.city | default('your city') }}}}.
        </mj-text>
        <mj-button href="https://example.com/articles/{n}?utm_source=newsletter">Read more</mj-button>
      </mj-column>
    </mj-section>"""

SUMMARY = (
    "A short summary of the story that tells the reader why it matters this week, with enough words to "
    "look like a real newsletter paragraph rather than a placeholder. "
)

# Five tracked links (four buttons and the archive link), the unsubscribe link (never rewritten) and,
# added by the pipeline, the open pixel.
NEWSLETTER = (
    """<mjml>
  <mj-head>
    <mj-title>{{ campaign.subject }}</mj-title>
    <mj-preview>This week for {{ subscriber.attributes.first_name | default(subscriber.name) }}</mj-preview>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="15px" line-height="22px" color="#333333" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff">
      <mj-column>
        <mj-image src="https://cdn.example.com/logo.png" alt="Example News" width="160px" />
        <mj-text font-size="22px">
          Hello {{ subscriber.attributes.first_name | default(subscriber.name) }},</mj-text>
        <mj-text>Here is what happened this week.
          {% if subscriber.attributes.plan == 'pro' %}As a pro member you read it first.{% endif %}</mj-text>
      </mj-column>
    </mj-section>
"""
    + "\n".join(ARTICLE.format(n=i + 1, title=f"Story number {i + 1}", summary=SUMMARY * 2) for i in range(4))
    + """
    <mj-section>
      <mj-column>
        <mj-divider border-color="#dddddd" />
        <mj-text font-size="12px" color="#888888">Older issues are in the
          <a href="https://example.com/archive">archive</a>.
          You receive this because {{ subscriber.email }} subscribed.
          <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""
)
SUBJECT = "{{ subscriber.attributes.first_name | default('Hello') }}, your weekly digest"


# -- processes -------------------------------------------------------------------------------------------


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


# -- data ------------------------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


async def reset_schema(url: str) -> None:
    from emailkit import migrate
    from emailkit.db.engine import Database

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()


async def load_audience(url: str, n: int) -> int:
    """COPY n subscribers, all CONFIRMED on one list; returns the list id."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        list_id = await conn.fetchval(
            "INSERT INTO lists (name, description, optin, visibility, tags, created_at, updated_at) "
            "VALUES ('Weekly digest', '', 'SINGLE', 'PRIVATE', '[]', $1, $1) RETURNING id",
            now,
        )
        subscribers = []
        for i in range(1, n + 1):
            first = FIRST_NAMES[i % len(FIRST_NAMES)]
            attributes = {
                "first_name": first,
                "city": rng.choice(CITIES),
                "plan": "pro" if i % 4 == 0 else "free",
                "points": rng.randrange(1000),
            }
            subscribers.append(
                (
                    i,
                    f"reader{i}@example.org",
                    f"{first} Reader{i}",
                    json.dumps(attributes),
                    "ENABLED",
                    now,
                    now,
                )
            )
        await conn.copy_records_to_table(
            "subscribers",
            records=subscribers,
            columns=["id", "email", "name", "attributes", "status", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table(
            "subscriptions",
            records=[(i, list_id, "CONFIRMED", now, now) for i in range(1, n + 1)],
            columns=["subscriber_id", "list_id", "status", "created_at", "updated_at"],
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), $1)", n)
        await conn.execute("ANALYZE")
        return int(list_id)
    finally:
        await conn.close()


async def create_campaign(url: str, list_id: int) -> tuple[int, str]:
    """The campaign (DRAFT) and an admin API key."""
    from emailkit.db.engine import Database
    from emailkit.db.tables.access import Role
    from emailkit.db.tables.content import ContentFormat
    from emailkit.db.tables.sending import Campaign, CampaignList
    from emailkit.domain.apikeys import create_api_key
    from emailkit.domain.content.rendering import validate_content

    validate_content(NEWSLETTER, ContentFormat.MJML, subject=SUBJECT)
    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        async with db.transaction() as s:
            campaign = Campaign(
                name="Weekly digest (benchmark)",
                subject=SUBJECT,
                from_email="news@news.example.com",
                from_name="Example News",
                body=NEWSLETTER,
                format=ContentFormat.MJML,
                track_opens=True,
                track_clicks=True,
            )
            s.add(campaign)
            await s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=list_id))
            _, key = await create_api_key(s, "bench", Role.ADMIN)
            return campaign.id, key
    finally:
        await db.dispose()


async def message_size(url: str, campaign_id: int, secret: str, samples: int = 50) -> int:
    """Average bytes on the wire per message, built by the pipeline's own per-recipient path."""
    from emailkit.db.engine import Database
    from emailkit.db.tables.sending import Campaign
    from emailkit.domain.content.tracked_urls import TrackingUrls
    from emailkit.domain.sending.ledger import Pending
    from emailkit.domain.sending.pipeline import CampaignSender
    from emailkit.domain.tokens import TokenSigner
    from emailkit.providers.mime import MimeBuilder
    from emailkit.providers.outbox import OutboxProvider

    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        sender = CampaignSender(
            db,
            OutboxProvider(Path(tempfile.gettempdir())),
            "smtp",
            TrackingUrls(PUBLIC_URL, TokenSigner(secret)),
        )
        async with db.session() as s:
            campaign = await s.get(Campaign, campaign_id)
            assert campaign is not None
            compiled = await sender.messages.compile(s, campaign)
        builder = MimeBuilder()
        sizes = []
        for i in range(1, samples + 1):
            attributes = {
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "city": CITIES[i % 8],
                "plan": "pro",
            }
            pending = Pending(10_000 + i, i, f"reader{i}@example.org", f"Reader {i}", attributes, 0)
            sizes.append(len(builder.build(sender.messages.build(compiled, pending)).data))
        return sum(sizes) // len(sizes)
    finally:
        await db.dispose()


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
    conn = await asyncpg.connect(asyncpg_dsn(url))
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
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(r["pid"]) for r in rows]
    finally:
        await conn.close()


# -- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2, help="emailkit worker --processes")
    parser.add_argument("--threads", type=int, default=4, help="emailkit worker --threads")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=40,
        help="EMAILKIT_SMTP_POOL_SIZE per worker process (the setting defaults to 40 too; 5 left a worker waiting)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="EMAILKIT_BATCH_SIZE")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="a plain `emailkit worker` as the README starts it: no options, no tuning variables "
        "(--processes, --threads, --pool-size and --batch-size are then ignored)",
    )
    parser.add_argument("--source-messages", type=int, default=30_000, help="messages smtp-source sends")
    parser.add_argument("--source-sessions", type=int, default=10)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--profile", type=Path, help="py-spy record one worker process into this file (collapsed stacks)"
    )
    args = parser.parse_args()
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
    env = {
        **inherited,
        # Where things are, not how fast to go: set in both modes.
        "EMAILKIT_DATABASE_URL": args.database_url,
        "EMAILKIT_BROKER_URL": args.redis_url,
        "EMAILKIT_SECRET_KEY": secret,
        "EMAILKIT_PUBLIC_URL": PUBLIC_URL,
        "EMAILKIT_PROVIDER": "smtp",
        "EMAILKIT_SMTP_URL": f"smtp://127.0.0.1:{sink.port}?tls=none&helo=bench.example.com",
    }
    if not args.defaults:
        env |= {
            "EMAILKIT_SMTP_POOL_SIZE": str(args.pool_size),
            "EMAILKIT_BATCH_SIZE": str(args.batch_size),
            "EMAILKIT_LOG_LEVEL": "INFO",
        }
    settings_env = {k: v for k, v in env.items() if k.startswith("EMAILKIT_")}
    if args.defaults:
        workers = start_workers(env, None, None, workdir)
    else:
        workers = start_workers(env, args.processes, args.threads, workdir)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        workers.wait_ready()
        if args.defaults:
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
        source_before = run_smtp_source(sink, args.source_messages, size, args.source_sessions)
        print(f"  smtp-source before the campaign: {source_before:,.0f} msg/s")
        pids = workers.pids()
        labels = {pid: process_label(pid) for pid in pids}
        worker_pids = [p for p in pids if labels[p] == "worker process"] or [workers.proc.pid]
        if args.processes == 1:
            labels[workers.proc.pid] = "worker process"
        if args.profile is not None:
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(worker_pids[0]),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(args.profile),
                    "--nonblocking",
                    # CPU only: samples of threads holding the GIL.
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
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
    problems = []
    if run.statuses.get("SENT", 0) != n:
        problems.append(f"expected {n} SENT deliveries")
    if sink_seen != n:
        problems.append(f"the sink saw {sink_seen} messages, expected {n}")
    if problems:
        sys.exit("; ".join(problems))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
