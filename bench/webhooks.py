"""Webhook ingestion: signed SendGrid batches of 1,000 events posted concurrently to `emailkit serve`.

Starts `emailkit serve` (uvicorn) on loopback against PostgreSQL with a SendGrid verification key, creates a
campaign with deliveries, pre-signs batches (ECDSA P-256, like SendGrid) of a realistic event mix, each
event carrying its delivery id as a custom arg, posts them over real HTTP with N concurrent clients and
prints events stored per second, request latency, and the server's CPU per event; then checks that the
database holds exactly the events the server reported as stored. Prints figures; not a test.

    EMAILKIT_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/webhooks.py \\
        [--deliveries 50000] [--batches 200] [--batch-size 1000] [--concurrency 4] [--repeat 1] \\
        [--server-workers 2] [--redis-url redis://127.0.0.1:6379/14]

With --server-workers above 1 the server runs in production mode (`serve --workers N` needs a broker): the Redis
database given is its broker and pub/sub. Use a fresh database per run for comparable figures: events accumulate.

`--repeat 2` posts every batch a second time after the first pass (provider retries): the second pass
must store nothing. Data is added next to whatever the database holds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchlib import free_port, in_default_workspace, process_cpu, wait_ready
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select, text

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, Subscriber, Subscription
from emailkit.db.tables.feedback import Event
from emailkit.db.tables.sending import Campaign, CampaignList, CampaignStatus, Delivery, DeliveryStatus
from emailkit.settings import load_settings

# (SendGrid event, share): roughly what a newsletter's feedback looks like.
MIX = [
    ("delivered", 0.36),
    ("open", 0.34),
    ("click", 0.14),
    ("deferred", 0.08),
    ("bounce", 0.04),
    ("dropped", 0.02),
    ("unsubscribe", 0.01),
    ("spamreport", 0.01),
]
LINKS = [f"https://example.com/articles/{i}?utm_source=newsletter" for i in range(25)]
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants (`serve --workers N` runs N children)."""
    total = process_cpu(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += tree_cpu(int(child))
            except OSError:
                continue
    return total


def postgres_cpu(pids: set[int]) -> dict[int, float]:
    """CPU seconds so far of the given postgres backends."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = process_cpu(pid)
        except OSError:
            continue
    return out


async def backends(url: str) -> set[int]:
    """The server's connections to the benchmark database (other databases' work is not counted)."""
    db = Database(url)
    try:
        async with db.session() as s:
            rows = await s.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            )
            return {int(pid) for pid in rows.scalars()}
    finally:
        await db.dispose()


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    # Backends that exited in between are lost; those that started count in full.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def prepare(url: str, deliveries: int) -> tuple[int, list[tuple[int, str]]]:
    """A FINISHED campaign with `deliveries` SENT deliveries; returns (campaign id, [(delivery id, email)])."""
    db = Database(url)
    try:
        await migrate.upgrade(db)
        tag = secrets.token_hex(4)
        async with db.transaction() as s:
            lst = MailingList(name=f"bench {tag}")
            campaign = Campaign(
                name=f"webhook bench {tag}",
                subject="Bench",
                from_email="bench@example.com",
                status=CampaignStatus.FINISHED,
                recipients_count=deliveries,
                sent_count=deliveries,
            )
            s.add_all([lst, campaign])
            await s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
            emails = [f"r{i}.{tag}@example.com" for i in range(deliveries)]
            await s.execute(insert(Subscriber), [{"email": e} for e in emails])
            found = await s.execute(
                select(Subscriber.email, Subscriber.id).where(Subscriber.email.like(f"%.{tag}@example.com"))
            )
            ids = {str(e): int(i) for e, i in found}
            await s.execute(
                insert(Subscription), [{"subscriber_id": i, "list_id": lst.id} for i in ids.values()]
            )
            await s.execute(
                insert(Delivery),
                [
                    {
                        "campaign_id": campaign.id,
                        "subscriber_id": ids[e],
                        "email": e,
                        "status": DeliveryStatus.SENT,
                        "provider": "sendgrid",
                        "provider_message_id": f"bench-{tag}-{n // 1000}",
                    }
                    for n, e in enumerate(emails)
                ],
            )
            rows = (
                await s.execute(
                    select(Delivery.id, Delivery.email)
                    .where(Delivery.campaign_id == campaign.id)
                    .order_by(Delivery.id)
                )
            ).all()
        return campaign.id, [(int(i), str(e)) for i, e in rows]
    finally:
        await db.dispose()


async def count_events(url: str, campaign_id: int) -> int:
    db = Database(url)
    try:
        async with db.session() as s:
            stmt = select(func.count()).select_from(Event).where(Event.campaign_id == campaign_id)
            return int((await s.execute(stmt)).scalar_one())
    finally:
        await db.dispose()


def make_batches(
    deliveries: list[tuple[int, str]], batches: int, size: int, start: int, rng: random.Random
) -> list[bytes]:
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    out = []
    for b in range(batches):
        items = []
        for i in range(size):
            delivery_id, email = rng.choice(deliveries)
            kind = rng.choices(kinds, weights)[0]
            item: dict[str, object] = {
                "email": email,
                "timestamp": start + b,
                "event": kind,
                "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode(),
                "sg_message_id": f"bench.filter{b}.{i}",
                "smtp-id": f"<bench-{b}-{i}@example.com>",
                "category": ["newsletter"],
                "emailkit_delivery": str(delivery_id),
            }
            if kind in ("open", "click"):
                item["useragent"] = USER_AGENT
                item["ip"] = f"198.51.100.{i % 250}"
            if kind == "click":
                item["url"] = rng.choice(LINKS)
            if kind == "bounce":
                item["type"] = rng.choice(["bounce", "blocked"])
                item["reason"] = "550 5.1.1 The email account that you tried to reach does not exist."
            if kind == "deferred":
                item["response"] = "400 try again later"
                item["attempt"] = "1"
            items.append(item)
        out.append(json.dumps(items).encode())
    return out


def sign(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


@dataclass
class Pass:
    events: int
    stored: int
    duplicates: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    postgres_cpu: float
    failures: int


async def post_all(
    base: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int, pid: int, db_url: str
) -> Pass:
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    totals = {"received": 0, "stored": 0, "duplicates": 0, "failures": 0}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body, headers = queue.get_nowait()
            t0 = time.perf_counter()
            resp = await client.post("/webhooks/sendgrid", content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                totals["failures"] += 1
                print(f"  HTTP {resp.status_code}: {resp.text[:200]}", file=sys.stderr)
                continue
            answer = resp.json()
            for k in ("received", "stored", "duplicates"):
                totals[k] += int(answer[k])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        pids = await backends(db_url)
        cpu0, pg0 = tree_cpu(pid), postgres_cpu(pids)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        cpu1, pg1 = tree_cpu(pid), postgres_cpu(pids | await backends(db_url))
    return Pass(
        totals["received"],
        totals["stored"],
        totals["duplicates"],
        seconds,
        latencies,
        cpu1 - cpu0,
        cpu_since(pg0, pg1),
        totals["failures"],
    )


def report(label: str, p: Pass) -> None:
    lat = sorted(p.latencies)
    p50 = statistics.median(lat) * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    print(
        f"{label}: {p.events} events in {p.seconds:.2f}s -> {p.stored / p.seconds:,.0f} stored/s "
        f"({p.events / p.seconds:,.0f} received/s); stored {p.stored}, duplicates {p.duplicates}, "
        f"failed requests {p.failures}; request p50 {p50:.0f} ms, p99 {p99:.0f} ms; "
        f"CPU per event: server {p.server_cpu / max(p.events, 1) * 1e6:.0f} us, "
        f"postgres {p.postgres_cpu / max(p.events, 1) * 1e6:.0f} us"
    )


@in_default_workspace
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("EMAILKIT_BENCH_DATABASE_URL"))
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument(
        "--batches", type=int, default=200, help="batches in the timed pass (long enough for a steady state)"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="post every batch this many times")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--server-workers",
        type=int,
        default=2,
        help="API processes (`emailkit serve --workers N`; more than one runs in production mode with Redis)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("EMAILKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="broker and pub/sub for production mode (when --server-workers > 1)",
    )
    args = parser.parse_args()

    if not args.database_url:
        sys.exit("set EMAILKIT_BENCH_DATABASE_URL (or --database-url) to a PostgreSQL database")
    url = load_settings(database_url=args.database_url, secret_key="x" * 32).database_url
    if not url.startswith("postgresql"):
        sys.exit("the webhook benchmark runs on PostgreSQL")
    emailkit = shutil.which("emailkit") or str(Path(sys.executable).with_name("emailkit"))

    campaign_id, deliveries = asyncio.run(prepare(url, args.deliveries))
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    rng = random.Random(args.seed)
    now = int(time.time())
    # Enough to reach every API process (each opens its pool and loads the key on its first request).
    warmup = [(b, sign(key, b, str(now))) for b in make_batches(deliveries, 8, args.batch_size, now, rng)]
    bodies = make_batches(deliveries, args.batches, args.batch_size, now, rng)
    requests = [(b, sign(key, b, str(now))) for b in bodies]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "EMAILKIT_DATABASE_URL": url,
        "EMAILKIT_SECRET_KEY": secrets.token_urlsafe(32),
        "EMAILKIT_PUBLIC_URL": base,
        "EMAILKIT_LOG_LEVEL": "WARNING",
        "EMAILKIT_SENDGRID_WEBHOOK_PUBLIC_KEY": public,
        "EMAILKIT_WEBHOOK_VERIFY": "true",
    }
    if args.server_workers > 1:
        env["EMAILKIT_BROKER_URL"] = args.redis_url
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [
                    emailkit,
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.server_workers),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_ready(base, server)
                print(
                    f"emailkit serve --workers {args.server_workers} on {base} (pid {server.pid}); "
                    f"campaign {campaign_id} with {len(deliveries)} "
                    f"deliveries; {args.batches} signed SendGrid batches of {args.batch_size} events, "
                    f"{args.concurrency} concurrent clients"
                )
                report("warm-up", asyncio.run(post_all(base, warmup, args.concurrency, server.pid, url)))
                stored = 0
                for n in range(args.repeat):
                    p = asyncio.run(post_all(base, requests, args.concurrency, server.pid, url))
                    report("pass 1" if n == 0 else f"retry pass {n + 1}", p)
                    stored += p.stored
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    in_db = asyncio.run(count_events(url, campaign_id))
    warm = len(warmup) * args.batch_size
    print(f"events of the campaign in the database: {in_db} (reported stored: {stored} + warm-up <= {warm})")
    if tail:
        print("server log tail:\n  " + "\n  ".join(tail))


if __name__ == "__main__":
    main()
