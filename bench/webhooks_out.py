"""Outgoing webhooks: events emitted into the outbox, then delivered to a local receiver; prints events/s.

A receiver process (raw asyncio HTTP/1.1 on loopback, keep-alive, answering 204) counts the requests, checks a
sample of signatures with the `standardwebhooks` reference verifier and checks that the messages of each
ordering key arrive in order. This process emits N events (`emit_many`, in transactions of 1,000, spread over
`--keys` ordering keys like per-subscriber events), then runs the deliverer of emailkit's job on uvloop, as a
worker does, until every message is SUCCEEDED. Prints figures; not a test.

    python bench/webhooks_out.py [--events 50000] [--keys 5000] [--concurrency 32] [--window 500]
    EMAILKIT_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python bench/webhooks_out.py

Without EMAILKIT_BENCH_DATABASE_URL a fresh SQLite file is used. On PostgreSQL the bench's tables are emptied
first (the database must be one for benchmarks only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import free_port, process_cpu
from sqlalchemy import func, select, text

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.webhooks_out import WebhookMessage, WebhookMessageStatus
from emailkit.domain.webhooks_out import emit, endpoints
from emailkit.domain.webhooks_out.delivery import Deliverer, DeliveryConfig
from emailkit.providers.webhook_client import GuardedHttpClient
from emailkit.settings import Settings

SECRET_KEY = "bench-secret-key-0123456789abcdef"
# Every this many requests the receiver verifies the signature with the reference library.
VERIFY_EVERY = 50


class Tally:
    """The receiver's count: requests, a verified sample of signatures, and the order within each key."""

    def __init__(self, webhook_secret: str, expected: int) -> None:
        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(webhook_secret)
        self.expected = expected
        self.state = {"count": 0, "verified": 0, "out_of_order": 0, "bad": 0}
        self.last_seq: dict[str, int] = {}
        self.done = asyncio.Event()

    def check(self, head: bytes, body: bytes) -> None:
        state = self.state
        state["count"] += 1
        data = json.loads(body)["data"]
        key, seq = data["key"], data["seq"]
        if self.last_seq.get(key, -1) >= seq:
            state["out_of_order"] += 1
        self.last_seq[key] = seq
        if state["count"] % VERIFY_EVERY == 0:
            self.verify(head, body)
        if state["count"] >= self.expected:
            self.done.set()

    def verify(self, head: bytes, body: bytes) -> None:
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            self.verifier.verify(body, headers)
            self.state["verified"] += 1
        except Exception:
            self.state["bad"] += 1


ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Receiving(asyncio.Protocol):
    """HTTP/1.1 requests with Content-Length bodies, answered 204, over keep-alive connections."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.tally.check(head, body)
            self.transport.write(ANSWER)


def receive(port: int, webhook_secret: str, expected: int, report: Any) -> None:
    """The receiver process: reports when it listens, and its tally once every event arrived."""
    import uvloop

    async def main() -> None:
        tally = Tally(webhook_secret, expected)
        server = await asyncio.get_running_loop().create_server(
            lambda: Receiving(tally), "127.0.0.1", port, backlog=512
        )
        report.put(("ready", None))
        await tally.done.wait()
        report.put(("done", tally.state))
        server.close()

    uvloop.run(main())


async def prepare(db: Database, url: str) -> tuple[int, str]:
    await migrate.upgrade(db)
    async with db.engine.begin() as conn:
        for table in ("webhook_attempts", "webhook_messages", "webhook_endpoints"):
            await conn.execute(text(f"DELETE FROM {table}"))
    async with db.transaction() as s:
        row, secret = await endpoints.create_endpoint(
            s, url, ["open"], "bench", instance_secret=SECRET_KEY, allow_private=True
        )
        return row.id, secret


async def emit_events(db: Database, count: int, keys: int) -> float:
    emit.subscriptions.invalidate()
    started = time.perf_counter()
    seq: dict[int, int] = {}
    for at in range(0, count, 1000):
        batch = []
        for i in range(at, min(at + 1000, count)):
            key = i % keys
            seq[key] = seq.get(key, -1) + 1
            data = {
                "key": f"k{key}",
                "seq": seq[key],
                "deliveryId": f"RGVsaXZlcnk6{i}",
                "email": f"s{key}@example.com",
            }
            batch.append(emit.Event("open", data, 1, f"subscriber:{key}"))
        async with db.transaction() as s:
            await emit.emit_many(s, batch)
    return time.perf_counter() - started


async def deliver(db: Database, endpoint_id: int, config: DeliveryConfig) -> tuple[float, float, int]:
    http = GuardedHttpClient(allow_private=True)
    deliverer = Deliverer(db, http, SECRET_KEY, config)
    cpu = time.process_time()
    started = time.perf_counter()
    runs = 0
    try:
        while True:
            runs += 1
            outcome = await deliverer.run(endpoint_id)
            if outcome.failed:
                sys.exit(f"{outcome.failed} deliveries failed")
            if not outcome.more:
                break
    finally:
        await http.aclose()
    return time.perf_counter() - started, time.process_time() - cpu, runs


async def database_cpu(db: Database) -> float | None:
    """CPU seconds of this database's server processes so far (PostgreSQL on this machine), else None."""
    if db.dialect != "postgresql":
        return None
    async with db.engine.connect() as conn:
        pids = (
            await conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        ).scalars()
        total = 0.0
        for pid in pids:
            try:
                total += process_cpu(int(pid))
            except OSError:
                pass
    return total


async def run(args: argparse.Namespace) -> None:
    url = os.environ.get("EMAILKIT_BENCH_DATABASE_URL")
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    settings = Settings(database_url=url, secret_key=SECRET_KEY)  # type: ignore[arg-type]
    db = Database(settings.database_url, pool_size=10)
    port = free_port()
    with workspace_scope(1):
        endpoint_id, secret = await prepare(db, f"http://127.0.0.1:{port}/hooks")
        spawn = multiprocessing.get_context("spawn")
        report: Any = spawn.Queue()
        receiver = spawn.Process(target=receive, args=(port, secret, args.events, report), daemon=True)
        receiver.start()
        assert report.get(timeout=30)[0] == "ready"
        emit_seconds = await emit_events(db, args.events, args.keys)
        config = DeliveryConfig(
            allow_private=True, concurrency=args.concurrency, window=args.window, budget_seconds=3600
        )
        db_cpu_before = await database_cpu(db)
        receiver_cpu_before = process_cpu(receiver.pid or 0)
        seconds, cpu, runs = await deliver(db, endpoint_id, config)
        receiver_cpu = process_cpu(receiver.pid or 0) - receiver_cpu_before
        db_cpu_after = await database_cpu(db)
        _, state = report.get(timeout=60)
        receiver.join(timeout=10)
        async with db.session() as s:
            by_status = dict(
                (
                    await s.execute(
                        select(WebhookMessage.status, func.count()).group_by(WebhookMessage.status)
                    )
                ).all()
            )
    await db.dispose()
    n = args.events
    print(f"database: {db.dialect}; {n:,} events over {args.keys:,} ordering keys; concurrency {args.concurrency}, "
          f"window {args.window}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"emitted:   {n / emit_seconds:,.0f} events/s ({emit_seconds:.2f} s, transactions of 1,000)")
    print(f"delivered: {n / seconds:,.0f} events/s ({seconds:.2f} s, {runs} run(s) of the deliverer)")
    print(
        f"deliverer CPU {cpu / n * 1e6:.0f} µs/event; receiver CPU {receiver_cpu / n * 1e6:.0f} µs/event",
        end="",
    )
    if db_cpu_before is not None and db_cpu_after is not None:
        print(f"; PostgreSQL CPU {(db_cpu_after - db_cpu_before) / n * 1e6:.0f} µs/event")
    else:
        print()
    print(f"receiver: {state['count']:,} requests, {state['verified']} signatures verified by standardwebhooks, "
          f"{state['bad']} bad, {state['out_of_order']} out of order per key")  # fmt: skip
    print(f"messages: {', '.join(f'{k}={v:,}' for k, v in sorted(by_status.items()))}")
    ok = (
        state["count"] == n
        and state["bad"] == 0
        and state["out_of_order"] == 0
        and by_status == {WebhookMessageStatus.SUCCEEDED: n}
    )
    if not ok:
        sys.exit("FAILED: not every event was delivered once, in order, correctly signed")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--keys", type=int, default=5_000, help="ordering keys (subscribers) the events spread over"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (connections)")
    parser.add_argument("--window", type=int, default=500, help="messages per round")
    args = parser.parse_args()
    import uvloop

    sys.path.insert(0, str(Path(__file__).parent))
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
