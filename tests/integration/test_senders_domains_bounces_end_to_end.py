"""Issue 15's "done when", end to end as production runs it (PostgreSQL, Redis, real `emailkit worker` processes):

* two SMTP senders, each pointing at its own SMTP server, and two sending domains, all made through the API, the
  domains verified against a real DNS server (dnsmasq on loopback) publishing the records the API asked for;
* two campaigns started at the same time, each From its own domain and through its own sender: each one's mail
  arrives at its own server only, every message DKIM-signed with its own domain's keys (RSA and Ed25519), which
  dkimpy checks by asking that DNS server;
* with EMAILKIT_BOUNCE_DOMAIN set every message's envelope sender is its VERP address, and a DSN for one
  recipient delivered over SMTP to `emailkit bounce-server` (the command, on a free port) records a hard bounce
  and suppresses the address, as the API then shows (suppression list, events, campaign stats).
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.sending import CampaignStatus
from emailkit.domain.verp import VerpKind
from emailkit.schema.relay import to_global_id
from tests.integration.test_bounce_server_cli import _wait_for_smtp
from tests.integration.test_cli import EMAILKIT, _base_env, _free_port, stop_server
from tests.integration.test_crash_safety import Stack, open_stack, ready, wait_for_status
from tests.integration.test_senders_workers import CREATE_SENDER, UPDATE_CAMPAIGN, seed
from tests.support.bounces import BOUNCE_DOMAIN, dsn, return_paths
from tests.support.dkim_check import dns_lookup, verify_all
from tests.support.dns_server import dns_server
from tests.support.environment import PG_APP_URL, PG_URL, REDIS_URL, TEST_SECRET
from tests.support.graphql import graphql_runner
from tests.support.redis_server import RedisServer
from tests.support.sending_domains import create_domain, verify_domain, zone_for
from tests.support.smtp_sink import CountingSink

pytestmark = [pytest.mark.parametrize("database", ["postgresql"], indirect=True)]

PER_CAMPAIGN = 300
STATS = "query($id: ID!) { campaign(id: $id) { stats { recipients sent bounced } } }"
SUPPRESSIONS = "query($s: String) { suppressions(search: $s) { edges { node { email reason } } } }"
EVENTS = """query($e: String!) { events(filter: {email: $e}) { edges { node {
  type bounceType email provider campaign { id } } } } }"""


class BounceStack(Stack):
    """The stack whose workers send with VERP return paths under the bounce domain."""

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "EMAILKIT_BOUNCE_DOMAIN": BOUNCE_DOMAIN}


@pytest.fixture
def brand_sinks() -> Iterator[tuple[CountingSink, CountingSink]]:
    a, b = CountingSink(keep=True), CountingSink(keep=True)
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
async def stack(
    db: Database, redis_server: RedisServer, sink: CountingSink, tmp_path: Path
) -> AsyncIterator[BounceStack]:
    async with open_stack(BounceStack, db, redis_server, sink, tmp_path) as opened:
        yield opened


@pytest.fixture
def bounce_server_port(tmp_path: Path) -> Iterator[int]:
    """`emailkit bounce-server` on a free port, on the test database (as the application role)."""
    env = {
        **_base_env(tmp_path),
        "EMAILKIT_DATABASE_URL": PG_APP_URL,
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
    }
    port = _free_port()
    log = tmp_path / "bounce-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(EMAILKIT), "bounce-server", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_smtp(proc, port, log)
        yield port
    finally:
        assert stop_server(proc) == 0, log.read_text()


async def make_sender(stack: Stack, name: str, sink: CountingSink) -> str:
    made = (
        await stack.gql(
            CREATE_SENDER,
            i={
                "name": name,
                "type": "SMTP",
                "settings": {"url": sink.url},
                "poolSize": 2,
                "ratePerSecond": 5000,
            },
        )
    )["createSender"]
    assert made["userErrors"] == [], made
    sender_id: str = made["sender"]["id"]
    return sender_id


async def _two_brands_signed_and_a_bounce(
    stack: BounceStack,
    brand_sinks: tuple[CountingSink, CountingSink],
    bounce_server_port: int,
    tmp_path: Path,
) -> None:
    booting = stack.spawn_workers(2)
    stack.runtime.domains = dataclasses.replace(stack.runtime.domains, ed25519=True)
    gql = graphql_runner(stack.api, stack.api_key)

    domains = []
    for name in ("alpha.test", "beta.test"):
        made = await create_domain(gql, name)
        assert made["userErrors"] == [], made
        domains.append(made["sendingDomain"])
    senders = [await make_sender(stack, name, sink) for name, sink in zip(("Alpha", "Beta"), brand_sinks)]
    # seed() sends From news@<prefix>.test: each campaign From its own domain.
    first, _, first_emails = await seed(stack.db, "alpha", PER_CAMPAIGN)
    second, _, second_emails = await seed(stack.db, "beta", PER_CAMPAIGN)
    for campaign_id, sender in ((first, senders[0]), (second, senders[1])):
        out = await stack.gql(
            UPDATE_CAMPAIGN, i={"id": to_global_id("Campaign", campaign_id), "senderId": sender}
        )
        assert out["updateCampaign"]["userErrors"] == []

    async with dns_server(zone_for(domains), tmp_path) as dns_port:
        stack.runtime.domains = dataclasses.replace(
            stack.runtime.domains, nameservers=(("127.0.0.1", dns_port),)
        )
        for domain in domains:
            verified = (await verify_domain(gql, domain["id"]))["sendingDomain"]
            assert verified["verified"] is True, verified["dnsRecords"]
        workers = await ready(booting)

        await asyncio.gather(stack.start_campaign(first), stack.start_campaign(second))
        for campaign_id in (first, second):
            row = await wait_for_status(stack.db, campaign_id, CampaignStatus.FINISHED, 120, workers)
            assert row.status_reason is None

        # Each campaign at its own server only, once per person; the default sender's server got nothing.
        sink_a, sink_b = brand_sinks
        assert sink_a.accepted() == Counter(first_emails)
        assert sink_b.accepted() == Counter(second_emails)
        assert stack.sink.accepted_total == 0
        lookup = dns_lookup(dns_port)
        verp = return_paths()
        for sink, domain in ((sink_a, "alpha.test"), (sink_b, "beta.test")):
            for message in sink.messages():
                assert sorted(verify_all(message.content, lookup)) == [
                    (domain, "ed25519-sha256"),
                    (domain, "rsa-sha256"),
                ]
                parsed = verp.read(message.mail_from)
                assert parsed is not None and parsed.kind is VerpKind.BOUNCE, message.mail_from

    # A DSN for one of the second campaign's recipients, to the VERP address its message went out with.
    bounced = sink_b.messages()[7]
    [recipient] = bounced.recipients
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=bounce_server_port, timeout=30) as client:
        await client.sendmail("", [bounced.mail_from], dsn(recipient))

    async def suppressed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await stack.gql(SUPPRESSIONS, s=recipient))["suppressions"]["edges"]
        return found

    # The server records the report before answering 250 to its DATA: it is there now.
    assert [e["node"] for e in await suppressed()] == [{"email": recipient, "reason": "HARD_BOUNCE"}]
    events = (await stack.gql(EVENTS, e=recipient))["events"]["edges"]
    assert [e["node"] for e in events] == [
        {
            "type": "BOUNCE",
            "bounceType": "HARD",
            "email": recipient,
            "provider": "smtp",
            "campaign": {"id": to_global_id("Campaign", second)},
        }
    ]
    stats = [
        (await stack.gql(STATS, id=to_global_id("Campaign", c)))["campaign"]["stats"] for c in (first, second)
    ]
    assert stats == [
        {"recipients": PER_CAMPAIGN, "sent": PER_CAMPAIGN, "bounced": 0},
        {"recipients": PER_CAMPAIGN, "sent": PER_CAMPAIGN, "bounced": 1},
    ]


if PG_URL and REDIS_URL:
    # Collected only with PostgreSQL and Redis wanted, as in CI (never skipped).
    test_two_brands_signed_and_a_bounce = _two_brands_signed_and_a_bounce
