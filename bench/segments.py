"""segmentPreview on PostgreSQL at 1,000,000 subscribers: counts for an attribute condition and for an
engagement condition (target <= 500 ms each), with EXPLAIN ANALYZE of every count.

Prints figures (not a test). The database named by --database-url is wiped, then loaded with asyncpg's COPY:

* subscribers with realistic attributes: city (50 values, skewed), plan, age (a number), signup date, a few
  tags; created over three years;
* three lists (60% / 10% / 2% of subscribers subscribed);
* 20 campaigns over the last year, 1 SENT delivery per recipient (~1M rows) and ~2M events (opens, clicks,
  deliveries) spread over those campaigns, about a quarter of subscribers being the engaged ones.

    python bench/segments.py [--subscribers 1000000] [--events 2000000] [--runs 7]
                             [--database-url postgresql://postgres@127.0.0.1:5432/ek_h5] [--reuse]

--reuse skips the load when the database already holds the data of an earlier run. Each query is run once
cold-ish (first run after load) and then --runs times; the median is reported. "count" is the COUNT that
segmentPreview runs; "preview" is the whole service call (validation with its reference look-ups, count and
the 10-row sample).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from benchlib import connect_as_default_workspace, in_default_workspace
from sqlalchemy import ClauseElement, Executable, Select, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.domain.audience.segments.compile import compile_filter
from emailkit.domain.audience.segments.store import count_matching, preview
from emailkit.domain.audience.segments.validate import validate_filter
from emailkit.domain.feedback.partitions import PARTITION_SCHEMA, MonthPartition, add_months

CITIES = [
    "Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Stuttgart", "Düsseldorf", "Leipzig", "Dortmund",
    "Essen", "Bremen", "Dresden", "Hanover", "Nuremberg", "Duisburg", "Bochum", "Wuppertal", "Bielefeld",
    "Bonn", "Münster", "Vienna", "Graz", "Linz", "Zurich", "Geneva", "Basel", "Bern", "Paris", "Lyon",
    "Marseille", "Amsterdam", "Rotterdam", "Utrecht", "Brussels", "Antwerp", "Copenhagen", "Stockholm",
    "Oslo", "Helsinki", "Warsaw", "Krakow", "Prague", "Brno", "Budapest", "Madrid", "Barcelona", "Lisbon",
    "Rome", "Milan", "London",
]  # fmt: skip
PLANS = (["free"] * 70) + (["pro"] * 25) + (["team"] * 5)
TAGS = ["vip", "beta", "partner", "press", "early-adopter"]
EVENT_MIX = (["OPEN"] * 60) + (["CLICK"] * 15) + (["DELIVERED"] * 25)
LANGUAGES = ["de", "en", "fr", "nl", "es", "it", "pl"]
CAMPAIGNS = 20


def asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgresql://", "postgresql+asyncpg://", url)


# --- loading ----------------------------------------------------------------------------------------------


def subscriber_rows(
    n: int, now: datetime, rng: random.Random, *, language: bool = False
) -> Iterator[tuple[Any, ...]]:
    # A Zipf-like skew: a few big cities, a long tail, as real audiences look.
    weights = [1 / (i + 1) ** 0.6 for i in range(len(CITIES))]
    cities = rng.choices(CITIES, weights, k=n)
    for i in range(1, n + 1):
        created = now - timedelta(days=rng.random() * 3 * 365)
        attrs: dict[str, Any] = {
            "city": cities[i - 1],
            "plan": rng.choice(PLANS),
            "age": rng.randint(18, 80),
            "signup": created.date().isoformat(),
        }
        if language:
            attrs["language"] = rng.choice(LANGUAGES)
        if rng.random() < 0.1:
            attrs["tags"] = rng.sample(TAGS, rng.randint(1, 3))
        yield (i, f"user{i}@example.com", f"User {i}", json.dumps(attrs), "ENABLED", created, created)


async def drop_secondary_indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    """Drop the non-constraint indexes of a table and return their definitions (bulk load, then rebuild)."""
    rows = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl "
        "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid "
        "WHERE i.indrelid = $1::regclass AND c.oid IS NULL",
        table,
    )
    for row in rows:
        await conn.execute(f"DROP INDEX {row['name']}")
    return [str(row["ddl"]) for row in rows]


async def load(
    url: str, n: int, n_events: int, now: datetime, *, campaigns: int = CAMPAIGNS, language: bool = False
) -> None:
    """Wipe the database and load it; ``language`` gives every subscriber a fifth attribute."""
    rng = random.Random(5)
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        await conn.execute(
            f'DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA IF EXISTS "{PARTITION_SCHEMA}" CASCADE'
        )
    finally:
        await conn.close()
    db = Database(sqlalchemy_url(url))
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()

    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        start = add_months(now.date().replace(day=1), -13)
        for k in range(13):
            part = MonthPartition(add_months(start, k))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {part.qualified} PARTITION OF events FOR VALUES {part.bounds}"
            )
        # Bulk load: foreign-key triggers off for this session (every reference is generated valid), and
        # secondary indexes rebuilt once at the end instead of maintained row by row.
        await conn.execute("SET session_replication_role = replica")
        rebuild: list[str] = []
        for table in ("subscribers", "subscriptions", "deliveries", "events"):
            rebuild += await drop_secondary_indexes(conn, table)

        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            "subscribers",
            records=subscriber_rows(n, now, rng, language=language),
            columns=["id", "email", "name", "attributes", "status", "created_at", "updated_at"],
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), $1)", n)
        print(f"loaded {n:,} subscribers in {time.perf_counter() - t0:.1f} s")

        await conn.execute(
            "INSERT INTO lists (name, description, optin, visibility, tags, created_at, updated_at) "
            "SELECT 'List ' || g, '', 'SINGLE', 'PRIVATE', '[]', now(), now() FROM generate_series(1, 3) g"
        )
        t0 = time.perf_counter()
        share = {1: 0.6, 2: 0.1, 3: 0.02}
        subscriptions = (
            (sid, lid, "UNSUBSCRIBED" if rng.random() < 0.05 else "CONFIRMED", now, now)
            for sid in range(1, n + 1)
            for lid, p in share.items()
            if rng.random() < p
        )
        await conn.copy_records_to_table(
            "subscriptions",
            records=subscriptions,
            columns=["subscriber_id", "list_id", "status", "created_at", "updated_at"],
        )
        print(f"loaded subscriptions in {time.perf_counter() - t0:.1f} s")

        sent_at = [now - timedelta(days=365 * (campaigns - c) / campaigns) for c in range(campaigns)]
        for c in range(campaigns):
            await conn.execute(
                "INSERT INTO campaigns (name, subject, status, from_email, from_name, body, format, track_opens, "
                "track_clicks, recipients_count, sent_count, failed_count, skipped_count, started_at, "
                "finished_at, created_at, updated_at) VALUES ($1, 'Hello', 'FINISHED', 'news@example.com', '', "
                "'<p>x</p>', 'HTML', true, true, 0, 0, 0, 0, $2, $2, $2, $2)",
                f"Campaign {c + 1}",
                sent_at[c],
            )

        # A quarter of subscribers engage; each campaign reaches a random 5% of everyone.
        engaged = rng.sample(range(1, n + 1), n // 4)
        t0 = time.perf_counter()
        per_campaign = n // campaigns
        deliveries = (
            (c + 1, sid, f"user{sid}@example.com", "SENT", 1, sent_at[c], sent_at[c], sent_at[c])
            for c in range(campaigns)
            for sid in sorted(rng.sample(range(1, n + 1), per_campaign))
        )
        await conn.copy_records_to_table(
            "deliveries",
            records=deliveries,
            columns=[
                "campaign_id",
                "subscriber_id",
                "email",
                "status",
                "attempts",
                "created_at",
                "updated_at",
                "sent_at",
            ],
        )
        print(f"loaded {per_campaign * campaigns:,} deliveries in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()

        def events() -> Iterator[tuple[Any, ...]]:
            for _ in range(n_events):
                c = rng.randrange(campaigns)
                sid = rng.choice(engaged)
                at = sent_at[c] + timedelta(hours=rng.random() * 24 * 14)
                kind = rng.choice(EVENT_MIX)
                yield (at, at, kind, "ses", f"user{sid}@example.com", c + 1, sid)

        await conn.copy_records_to_table(
            "events",
            records=events(),
            columns=[
                "occurred_at",
                "recorded_at",
                "type",
                "provider",
                "email",
                "campaign_id",
                "subscriber_id",
            ],
        )
        print(f"loaded {n_events:,} events in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        for ddl in rebuild:
            await conn.execute(ddl)
        await conn.execute("VACUUM ANALYZE")
        print(f"rebuilt {len(rebuild)} indexes and vacuumed in {time.perf_counter() - t0:.1f} s")
    finally:
        await conn.close()


async def loaded(url: str, n: int) -> bool:
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        return bool(await conn.fetchval("SELECT count(*) >= $1 FROM subscribers", n))
    except asyncpg.UndefinedTableError:
        return False
    finally:
        await conn.close()


# --- measuring --------------------------------------------------------------------------------------------


class Explain(Executable, ClauseElement):
    """EXPLAIN (ANALYZE, BUFFERS) of a statement, with its parameters bound by SQLAlchemy as usual."""

    inherit_cache = False

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (ANALYZE, BUFFERS) " + compiler.process(element.stmt, **kw)


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU of a local PostgreSQL backend process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def measure(db: Database, label: str, raw: dict[str, Any], runs: int) -> dict[str, Any]:
    async with db.session() as s:
        spec = await validate_filter(s, raw)
        now = datetime.now(UTC)
        stmt = select(func.count()).select_from(Subscriber).where(compile_filter(spec, "postgresql", now=now))

        async def timed(work: Any) -> tuple[float, Any]:
            t0 = time.perf_counter()
            out = await work()
            return time.perf_counter() - t0, out

        first, count = await timed(lambda: count_matching(s, spec, now=now))
        counts = [(await timed(lambda: count_matching(s, spec, now=now)))[0] for _ in range(runs)]
        previews = [(await timed(lambda: preview(s, raw, now=now)))[0] for _ in range(runs)]
        plan = [str(line) for line in (await s.execute(Explain(stmt))).scalars()]
        # The machine is shared: the server's own CPU time for one COUNT does not grow with other people's
        # load. Measured on a serial plan, since parallel workers' time is not charged to this backend.
        pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await s.execute(text("SET max_parallel_workers_per_gather = 0"))
        cpu_before = backend_cpu_seconds(pid)
        for _ in range(runs):
            await count_matching(s, spec, now=now)
        cpu = (backend_cpu_seconds(pid) - cpu_before) / runs
        await s.execute(text("RESET max_parallel_workers_per_gather"))
    print(f"\n== {label}: {count:,} subscribers")
    print(f"   filter: {json.dumps(raw, ensure_ascii=False)}")
    print(f"   count   first {ms(first)}   median {ms(statistics.median(counts))}   max {ms(max(counts))}")
    print(
        f"   preview median {ms(statistics.median(previews))}   max {ms(max(previews))}  (validation + count + sample)"
    )
    print(f"   server CPU per count (serial plan) {ms(cpu)}")
    print("   EXPLAIN (ANALYZE, BUFFERS):")
    for line in plan:
        print("     " + line)
    return {
        "label": label,
        "count": count,
        "median_ms": statistics.median(counts) * 1000,
        "cpu_ms": cpu * 1000,
    }


@in_default_workspace
async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("EMAILKIT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ek_h5"),
    )
    parser.add_argument("--reuse", action="store_true", help="keep the data of an earlier run if present")
    args = parser.parse_args()

    now = datetime.now(UTC)
    if not (args.reuse and await loaded(args.database_url, args.subscribers)):
        await load(args.database_url, args.subscribers, args.events, now)

    db = Database(sqlalchemy_url(args.database_url), pool_size=1)
    try:
        async with db.session() as s:
            total = (await s.execute(select(func.count()).select_from(Subscriber))).scalar_one()
        print(f"\n{total:,} subscribers")
        queries: list[tuple[str, dict[str, Any]]] = [
            ("attribute: city EQ Berlin", {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}),
            (
                "engagement: opened any campaign within 30 days",
                {"engagement": {"event": "OPENED", "withinDays": 30}},
            ),
            (
                "attribute: age GTE 65 (typed numeric range)",
                {"attribute": {"path": "age", "op": "GTE", "value": 65}},
            ),
            (
                "engagement: received any campaign within 30 days",
                {"engagement": {"event": "RECEIVED", "withinDays": 30}},
            ),
            (
                "issue example: Berlin, opened in 30 days, not on list 1",
                {
                    "attribute": {"path": "city", "op": "EQ", "value": "Berlin"},
                    "engagement": {"event": "OPENED", "withinDays": 30},
                    "not": {"list": {"listId": 1}},
                },
            ),
        ]
        results = [await measure(db, label, raw, args.runs) for label, raw in queries]
    finally:
        await db.dispose()

    loadavg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        "\nsummary (median COUNT, target <= 500 ms for the first two; "
        f"load average {loadavg} on {os.cpu_count()} CPUs):"
    )
    for r in results:
        print(
            f"  {r['median_ms']:8.1f} ms  (server CPU {r['cpu_ms']:6.1f} ms)  {r['count']:>9,}  {r['label']}"
        )


if __name__ == "__main__":
    asyncio.run(main())
