"""emailkit on several hosts, and a worker host cut off mid-campaign.

Three hosts are network namespaces on this machine (tests/support/netns.py): a services host running a
throw-away PostgreSQL cluster, a throw-away redis-server and an SMTP peer that records every recipient, and two
worker hosts, each running `emailkit worker --processes 1` against those services over the (virtual) network.

Once both workers are sending, worker host 1 is unplugged from the backend network (PostgreSQL and Redis; its
mail link stays up), kept off until its batches have been taken over by worker 2 (which needs their lease to run
out first), then plugged back in. What is checked:

* the campaign finishes, and the SMTP peer received every recipient exactly once;
* the ledger says SENT or IN_DOUBT for each, and the counters agree with it;
* the fencing: after the takeover of each of its batches, the healed worker wrote nothing on that batch's row
  nor on its deliveries (a trigger on both tables records which host wrote what, on the database's clock),
  and every message it handed over after the takeover was one it had marked SENDING while it still held the
  batch (those are IN_DOUBT: the new owner never sends them again).

The test process itself reaches PostgreSQL through the cluster's Unix socket (sockets in the file system are not
namespaced) and enqueues the campaign's batches from the services host.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text

from emailkit import migrate
from emailkit.db.engine import Database
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.sending import lifecycle
from tests.support.audience import seed_campaign
from tests.support.database import prepare_app_role
from tests.support.environment import APP_ROLE, TEST_SECRET
from tests.support.netns import Hosts, missing_requirements
from tests.support.pg_cluster import ThrowawayCluster, server_bin
from tests.support.smtp_recorder import Accepted, read
from tests.support.workers import ROOT, WorkerProcess

pytestmark = pytest.mark.multihost

# The batch lease, the setting under test (EMAILKIT_BATCH_LEASE_SECONDS; 5 is its floor): a worker that has not
# renewed its lease for this long is presumed dead, and its batch is taken over.
LEASE_SECONDS = 5
HEARTBEAT_SECONDS = 5
REQUEUE_AFTER_SECONDS = 2
RECIPIENTS = 2400
# Eight batches for four worker threads; the shared rate limit makes each last some seconds, so that both
# workers are in the middle of batches when one of them is cut off.
BATCH_SIZE = 300
WORKER_THREADS = 2
RATE_PER_SECOND = 120
PG_PORT = 5432
REDIS_PORT = 6379
SMTP_PORT = 2525
# Redis refuses other hosts without one (protected mode), as it should.
REDIS_PASSWORD = "multihost-redis-password"
CUT, KEPT = 1, 2  # worker hosts
WITHIN = 120.0

T = TypeVar("T")

# Which host wrote what, and when (on the database's clock): every change of a batch row and every status
# change of a delivery. SECURITY DEFINER: the application role writes the rows through it, but has no rights on
# the audit table (and row-level security does not apply to it).
AUDIT = [
    "CREATE SCHEMA audit",
    """CREATE TABLE audit.writes (
        id bigserial PRIMARY KEY, tbl text NOT NULL, row_id bigint NOT NULL, campaign_id bigint,
        subscriber_id bigint, client inet, at timestamptz NOT NULL DEFAULT clock_timestamp(),
        old_status text, new_status text, old_attempts int, new_attempts int
    )""",
    """CREATE FUNCTION audit.batch_written() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        INSERT INTO audit.writes (tbl, row_id, campaign_id, client, old_status, new_status, old_attempts,
            new_attempts)
        VALUES ('campaign_batches', NEW.id, NEW.campaign_id, inet_client_addr(), OLD.status, NEW.status,
            OLD.attempts, NEW.attempts);
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION audit.delivery_written() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        INSERT INTO audit.writes (tbl, row_id, campaign_id, subscriber_id, client, old_status, new_status)
        VALUES ('deliveries', NEW.id, NEW.campaign_id, NEW.subscriber_id, inet_client_addr(), OLD.status,
            NEW.status);
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER audit_batch AFTER UPDATE ON public.campaign_batches
        FOR EACH ROW EXECUTE FUNCTION audit.batch_written()""",
    """CREATE TRIGGER audit_delivery AFTER UPDATE OF status ON public.deliveries
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION audit.delivery_written()""",
]


async def until(
    what: str,
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    logs: Callable[[], str] = lambda: "",
) -> T:
    """Poll `check` until it returns something other than None (or falsy), or fail saying `what` with the logs
    as they stand then (read at the failure, not when the wait began)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s\n{logs()}")
        await asyncio.sleep(0.2)


@dataclass
class Site:
    """The hosts and the services on them, as the test sees them."""

    hosts: Hosts
    cluster: ThrowawayCluster
    tmp: Path
    peer_file: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[int, WorkerProcess] = field(default_factory=dict)
    # Through the Unix socket: as the application role (the domain code) and as the superuser (the audit).
    db: Database = field(init=False)
    admin: Database = field(init=False)

    @property
    def database_url(self) -> str:
        return f"postgresql://{APP_ROLE}@{self.hosts.services_ip}:{PG_PORT}/postgres"

    @property
    def broker_url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@{self.hosts.services_ip}:{REDIS_PORT}/0"

    def worker_env(self, n: int) -> dict[str, str]:
        """Everything a worker host is given: what must match across hosts (database, broker, secret key,
        public URL, lease and batch settings), and what is its own (data directory)."""
        data = self.tmp / f"worker-{n}"
        data.mkdir(exist_ok=True)
        return {
            "EMAILKIT_DATABASE_URL": self.database_url,
            "EMAILKIT_BROKER_URL": self.broker_url,
            "EMAILKIT_REDIS_URL": self.broker_url,
            "EMAILKIT_SECRET_KEY": TEST_SECRET,
            "EMAILKIT_PUBLIC_URL": "http://mail.multihost.test",
            "EMAILKIT_DATA_DIR": str(data),
            "EMAILKIT_PROVIDER": "smtp",
            "EMAILKIT_SMTP_URL": f"smtp://{self.hosts.mail_ip}:{SMTP_PORT}?tls=none",
            "EMAILKIT_SMTP_POOL_SIZE": "2",
            "EMAILKIT_BATCH_SIZE": str(BATCH_SIZE),
            "EMAILKIT_BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
            "EMAILKIT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "EMAILKIT_REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER_SECONDS),
            "EMAILKIT_SEND_RATE_PER_SECOND": str(RATE_PER_SECOND),
            "EMAILKIT_WORKER_THREADS": str(WORKER_THREADS),
            "EMAILKIT_LOG_LEVEL": "INFO",
            "EMAILKIT_LOG_FORMAT": "console",
        }

    async def start_workers(self) -> None:
        for n in (CUT, KEPT):
            self.workers[n] = WorkerProcess(
                self.worker_env(n), name=f"worker host {n}", prefix=self.hosts.exec_in(self.hosts.worker(n))
            )
        for worker in self.workers.values():
            await worker.wait_for_log("worker ready", within=WITHIN)

    def logs(self) -> str:
        return "\n\n".join(f"--- {w.name}:\n{w.log(40)}" for w in self.workers.values())

    async def enqueue(self, batch_ids: list[int]) -> None:
        """Enqueue the batches' jobs from the services host, as the API there would after startCampaign."""
        code = (
            "import asyncio, sys\n"
            "from emailkit.domain.sending import dispatch\n"
            "from emailkit.tasks.broker.factory import configure_broker\n"
            "from emailkit.tasks.broker.queue import DramatiqJobQueue\n"
            "queue = DramatiqJobQueue(configure_broker(sys.argv[1]))\n"
            "async def main():\n"
            "    for batch_id in sys.argv[2:]:\n"
            "        await queue.enqueue(dispatch.SEND_BATCH_JOB, {'batch_id': int(batch_id)})\n"
            "asyncio.run(main())\n"
        )
        command = [
            *self.hosts.exec_in(self.hosts.services),
            sys.executable,
            "-c",
            code,
            self.broker_url,
            *map(str, batch_ids),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"enqueueing failed: {done.stderr}"

    def accepted(self) -> list[Accepted]:
        return read(self.peer_file)[0]

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.kill()
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def start_services(site: Site) -> None:
    """redis-server and the SMTP peer on the services host (PostgreSQL is already up); the peer is last."""
    hosts = site.hosts
    redis_server = [
        *hosts.exec_in(hosts.services),
        "redis-server",
        "--bind",
        hosts.services_ip,
        "--port",
        str(REDIS_PORT),
        "--requirepass",
        REDIS_PASSWORD,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(site.tmp),
        "--logfile",
        str(site.tmp / "redis.log"),
    ]
    site.processes.append(
        subprocess.Popen(redis_server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    peer = [
        *hosts.exec_in(hosts.services),
        sys.executable,
        "-m",
        "tests.support.smtp_recorder",
        hosts.mail_ip,
        str(SMTP_PORT),
        str(site.peer_file),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    site.processes.append(subprocess.Popen(peer, cwd=ROOT, env=env, stdout=subprocess.PIPE))


@asynccontextmanager
async def built_site(site_tmp: Path) -> AsyncIterator[Site]:
    """The hosts and their services, all removed afterwards whatever happened (namespaces, processes, cluster)."""
    missing = missing_requirements()
    assert not missing, "the several-hosts test needs " + "; ".join(missing)
    bindir = server_bin()
    assert bindir is not None
    hosts = Hosts(workers=2)
    cluster: ThrowawayCluster | None = None
    site: Site | None = None
    try:
        hosts.build()
        cluster = ThrowawayCluster(
            bindir,
            netns=hosts.services,
            listen=hosts.services_ip,
            port=PG_PORT,
            # A cut-off worker's open transaction would hold its row locks until TCP gives up (hours): the
            # server ends such sessions itself (README, "Running on several hosts").
            settings={"idle_in_transaction_session_timeout": f"{2 * LEASE_SECONDS}s"},
        )
        await asyncio.to_thread(cluster.init)
        cluster.trust_network(f"{hosts.services_ip.rsplit('.', 1)[0]}.0/24")
        await asyncio.to_thread(cluster.start)
        site = Site(hosts, cluster, site_tmp, site_tmp / "peer.jsonl")
        start_services(site)
        peer = site.processes[-1]
        assert peer.stdout is not None
        ready = await asyncio.to_thread(peer.stdout.readline)
        assert ready.strip() == b"ready", f"the SMTP peer did not start (exit code {peer.poll()})"

        await until("redis-server up", lambda: asyncio.to_thread(redis_up, hosts), within=30)
        await prepare_app_role(cluster.socket_url())
        site.db = Database(cluster.socket_url(APP_ROLE), pool_size=2)
        await migrate.upgrade(site.db)
        site.admin = Database(cluster.socket_url(), pool_size=1)
        async with site.admin.engine.begin() as conn:
            for statement in AUDIT:
                await conn.execute(text(statement))
        yield site
    finally:
        if site is not None:
            site.stop()
            for db in ("db", "admin"):
                if db in site.__dict__:
                    await getattr(site, db).dispose()
        if cluster is not None:
            await asyncio.to_thread(cluster.remove)
        hosts.remove()


def redis_up(hosts: Hosts) -> bool:
    probe = [
        *hosts.exec_in(hosts.services),
        "redis-cli",
        "--no-auth-warning",
        "-a",
        REDIS_PASSWORD,
        "-h",
        hosts.services_ip,
        "-p",
        str(REDIS_PORT),
        "ping",
    ]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() == "PONG"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with built_site(tmp_path) as built:
        yield built


# -- observing -----------------------------------------------------------------------------------------


async def batches(db: Database, campaign_id: int) -> dict[int, tuple[BatchStatus, int, int, int]]:
    """Each batch: status, attempts (the claim number: each claim adds one), and its subscriber id range."""
    async with db.session() as s:
        rows = await s.execute(
            select(
                CampaignBatch.id,
                CampaignBatch.status,
                CampaignBatch.attempts,
                CampaignBatch.lo_id,
                CampaignBatch.hi_id,
            ).where(CampaignBatch.campaign_id == campaign_id)
        )
        return {bid: (st, attempts, lo, hi) for bid, st, attempts, lo, hi in rows}


async def campaign_row(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id, populate_existing=True)
        assert row is not None
        return row


async def audit(admin: Database) -> list[dict[str, Any]]:
    async with admin.engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM audit.writes ORDER BY id"))
        return [dict(r._mapping) for r in rows]


def host_of(client: Any) -> str | None:
    return None if client is None else str(client)


# Per delivery: subscriber id, status, when it was recorded sent.
Ledger = dict[int, tuple[int | None, DeliveryStatus, datetime | None]]


async def assert_everyone_exactly_once(
    site: Site, campaign_id: int, emails: list[str], accepted: list[Accepted]
) -> Ledger:
    """Every recipient received exactly once at the SMTP peer; the ledger SENT or IN_DOUBT, counters agreeing."""
    received = Counter(r for a in accepted for r in a.recipients)
    assert {e: n for e, n in received.items() if n > 1} == {}, "mailed twice"
    missing = set(emails) - set(received)
    async with site.db.session() as s:
        ledger: Ledger = {
            did: (sid, st, sent_at)
            for did, sid, st, sent_at in await s.execute(
                select(Delivery.id, Delivery.subscriber_id, Delivery.status, Delivery.sent_at).where(
                    Delivery.campaign_id == campaign_id
                )
            )
        }
        lost = (
            await s.execute(
                select(Delivery.id, Delivery.email, Delivery.status).where(Delivery.email.in_(missing))
            )
        ).all()
    if lost:
        ids = {r.id for r in lost}
        trail = [w for w in await audit(site.admin) if w["tbl"] == "deliveries" and w["row_id"] in ids]
        raise AssertionError(f"never received: {lost}\ntheir rows' changes: {trail}\n{site.logs()}")
    row = await campaign_row(site.db, campaign_id)
    statuses = Counter(st for _, st, _ in ledger.values())
    assert set(statuses) <= {DeliveryStatus.SENT, DeliveryStatus.IN_DOUBT}
    assert (row.recipients_count, row.sent_count, row.in_doubt_count, row.failed_count) == (
        RECIPIENTS,
        statuses[DeliveryStatus.SENT],
        statuses[DeliveryStatus.IN_DOUBT],
        0,
    )
    assert {a.delivery_id for a in accepted} == set(ledger)
    return ledger


async def assert_fenced(
    site: Site,
    campaign_id: int,
    taken_over: dict[int, int],
    accepted: list[Accepted],
    ledger: Ledger,
    cut_wall: float,
) -> None:
    """Nothing written or sent by the cut-off worker for a batch once that batch was taken over."""
    cut_ip, kept_ip = site.hosts.worker_ip(CUT), site.hosts.worker_ip(KEPT)
    cut_mail = site.hosts.worker_mail_ip(CUT)
    writes = await audit(site.admin)
    ranges = {bid: (lo, hi) for bid, (_, _, lo, hi) in (await batches(site.db, campaign_id)).items()}
    for bid, claim in taken_over.items():
        lo, hi = ranges[bid]
        takeover = next(
            w
            for w in writes
            if w["tbl"] == "campaign_batches" and w["row_id"] == bid and w["new_attempts"] == claim
        )
        assert host_of(takeover["client"]) == kept_ip
        since: datetime = takeover["at"]
        of_batch = [
            w
            for w in writes
            if (w["tbl"] == "campaign_batches" and w["row_id"] == bid)
            or (w["tbl"] == "deliveries" and lo <= w["subscriber_id"] <= hi)
        ]
        # Until the cut-off worker claims the batch again itself, if it ever does (not in this test's run).
        reclaimed = [
            w["at"]
            for w in of_batch
            if w["tbl"] == "campaign_batches"
            and host_of(w["client"]) == cut_ip
            and (w["new_attempts"] or 0) > claim
        ]
        until_at = min(reclaimed, default=None)
        stale = [
            w
            for w in of_batch
            if host_of(w["client"]) == cut_ip and w["at"] > since and (until_at is None or w["at"] < until_at)
        ]
        assert stale == [], f"batch {bid}: the healed worker wrote after the takeover: {stale}"
        # What the cut-off worker handed over after the takeover, it had marked SENDING while it held the
        # batch: the new owner found those rows SENDING and made them IN_DOUBT (it never sends them again).
        marked_before = {
            w["row_id"]
            for w in of_batch
            if host_of(w["client"]) == cut_ip
            and w["new_status"] == DeliveryStatus.SENDING
            and w["at"] < since
        }
        for a in accepted:
            if a.client != cut_mail or a.delivery_id is None:
                continue
            sid, status, sent_at = ledger[a.delivery_id]
            if sid is None or not lo <= sid <= hi:
                continue
            if a.at > since.timestamp():
                assert a.delivery_id in marked_before, f"batch {bid}: sent without a claim: {a}"
                assert status is DeliveryStatus.IN_DOUBT
            # What it recorded SENT of this batch, it recorded before it was cut off.
            recorded_before_cut = sent_at is not None and sent_at.timestamp() < cut_wall
            assert status is DeliveryStatus.IN_DOUBT or recorded_before_cut, (bid, a)


# -- the test ------------------------------------------------------------------------------------------


async def test_a_worker_host_cut_off_mid_campaign_sends_nothing_twice_and_nothing_it_no_longer_owns(
    site: Site,
) -> None:
    await site.start_workers()
    campaign_id, emails = await seed_campaign(site.db, RECIPIENTS)
    async with site.db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=BATCH_SIZE)
    assert len(batch_ids) == RECIPIENTS // BATCH_SIZE
    await site.enqueue(batch_ids)

    cut_mail, kept_mail = site.hosts.worker_mail_ip(CUT), site.hosts.worker_mail_ip(KEPT)

    async def both_sending() -> bool:
        return {a.client for a in site.accepted()} >= {cut_mail, kept_mail}

    await until("both worker hosts sending", both_sending, within=WITHIN, logs=site.logs)
    cut_ip = site.hosts.worker_ip(CUT)

    async def cut_host_running_a_batch() -> bool:
        """The host to be cut off holds a running batch (it claimed it last): cut between two of its batches,
        it would have nothing to take over, and the wait below could not end. Under load it starts late."""
        running = {
            bid
            for bid, (st, *_) in (await batches(site.db, campaign_id)).items()
            if st is BatchStatus.RUNNING
        }
        claimed_by = {
            w["row_id"]: host_of(w["client"])
            for w in await audit(site.admin)
            if w["tbl"] == "campaign_batches" and w["new_status"] == BatchStatus.RUNNING
        }
        return any(claimed_by.get(bid) == cut_ip for bid in running)

    await until(
        "the host to cut off running a batch", cut_host_running_a_batch, within=WITHIN, logs=site.logs
    )

    # -- the partition --
    site.hosts.cut(CUT)
    cut_at, cut_wall = time.monotonic(), time.time()
    held = {
        bid: attempts
        for bid, (st, attempts, _, _) in (await batches(site.db, campaign_id)).items()
        if st is BatchStatus.RUNNING
    }

    async def settled() -> dict[int, int] | None:
        """The batches running at the cut, once each is done by its (live) holder or claimed again by
        another worker after its lease ran out; then, those claimed again (their new claim numbers)."""
        now = await batches(site.db, campaign_id)
        again = {bid: now[bid][1] for bid, a in held.items() if now[bid][1] > a}
        done = {bid for bid, a in held.items() if now[bid][0] is BatchStatus.DONE and now[bid][1] == a}
        return again if again and set(again) | done == set(held) else None

    taken_over = await until(
        "the cut-off worker's batches taken over", settled, within=WITHIN, logs=site.logs
    )
    # Necessarily so (the takeover waits for the lease to run out); said to show the partition outlasted it.
    assert time.monotonic() - cut_at > LEASE_SECONDS
    site.hosts.heal(CUT)

    async def finished() -> Campaign | None:
        row = await campaign_row(site.db, campaign_id)
        return row if row.status is CampaignStatus.FINISHED else None

    await until("the campaign finished", finished, within=WITHIN, logs=site.logs)

    # Both workers stop as an operator would stop them (SIGTERM: in-flight jobs finish first), so that whatever
    # the healed worker still had in flight for the batches it lost has happened before the checks.
    for worker in site.workers.values():
        worker.proc.terminate()
    for worker in site.workers.values():
        try:
            await asyncio.to_thread(worker.proc.wait, WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{worker.name} did not stop on SIGTERM\n{site.logs()}") from None

    accepted = site.accepted()
    ledger = await assert_everyone_exactly_once(site, campaign_id, emails, accepted)
    await assert_fenced(site, campaign_id, taken_over, accepted, ledger, cut_wall)
