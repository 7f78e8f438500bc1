"""A sending domain end to end, as an operator meets it in production mode: the rule refuses the campaign, the
domain is created, its records published on a real DNS server (dnsmasq on loopback), verified, and the campaign's
mail goes out signed with the domain's keys, which dkimpy checks by asking that same DNS server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import dkim
import httpx
import pytest

from emailkit.app import build_runtime, create_app
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.dkim_check import dns_lookup, signatures
from tests.support.dns_server import dns_server
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.graphql import CREATE_LIST, GQL, data, graphql_runner
from tests.support.sending_domains import create_domain, verify_domain, zone_for

CREATE_CAMPAIGN = "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id } userErrors { field code } } }"
SEND_TEST = (
    "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { results { email ok error } "
    "userErrors { code } } }"
)


@pytest.fixture
async def production(db: Database, tmp_path: Path) -> AsyncIterator[tuple[GQL, Runtime, Path]]:
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        public_url="http://testserver",
        outbox_dir=tmp_path / "outbox",
        data_dir=tmp_path,
        # As a production instance has it by default.
        require_verified_domains=True,
        dkim_ed25519=True,
    )
    runtime = build_runtime(settings, db)
    app = create_app(settings, runtime)
    key = await make_key(db, Role.ADMIN, "admin")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        try:
            yield graphql_runner(client, key), runtime, tmp_path / "outbox"
        finally:
            if runtime.sending is not None:
                await runtime.sending.close()


async def test_from_refused_to_signed_mail(production: tuple[GQL, Runtime, Path], tmp_path: Path) -> None:
    gql, runtime, outbox = production
    news = data(await gql(CREATE_LIST, {"i": {"name": "News", "optin": "SINGLE"}}))["createList"]["list"][
        "id"
    ]
    campaign = {
        "name": "Launch",
        "subject": "We are open",
        "fromEmail": "hello@shop.example.com",
        "listIds": [news],
        "body": "<p>Hello {{ subscriber.name }}</p>",
        "format": "HTML",
    }
    refused = data(await gql(CREATE_CAMPAIGN, {"i": campaign}))["createCampaign"]
    assert refused["userErrors"] == [{"field": "fromEmail", "code": "DOMAIN_NOT_VERIFIED"}]

    domain = (await create_domain(gql, "shop.example.com"))["sendingDomain"]
    assert domain["ed25519Selector"] is not None
    async with dns_server(zone_for([domain]), tmp_path) as port:
        runtime.domains = dataclasses.replace(runtime.domains, nameservers=(("127.0.0.1", port),))
        verified = (await verify_domain(gql, domain["id"]))["sendingDomain"]
        assert verified["verified"] is True, verified["dnsRecords"]

        made = data(await gql(CREATE_CAMPAIGN, {"i": campaign}))["createCampaign"]
        assert made["userErrors"] == []
        sent = data(
            await gql(SEND_TEST, {"i": {"campaignId": made["campaign"]["id"], "emails": ["me@example.org"]}})
        )
        assert sent["sendTestEmail"]["results"] == [{"email": "me@example.org", "ok": True, "error": None}]
        [mail] = list(outbox.glob("test-*.eml"))
        raw = mail.read_bytes()
        found = signatures(raw)
        assert sorted((s["d"], s["a"]) for s in found) == [
            ("shop.example.com", "ed25519-sha256"),
            ("shop.example.com", "rsa-sha256"),
        ]
        checker = dkim.DKIM(raw)
        lookup = dns_lookup(port)
        assert checker.verify(idx=0, dnsfunc=lookup) and checker.verify(idx=1, dnsfunc=lookup)
