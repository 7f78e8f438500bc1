"""verifySendingDomain against a real DNS server started on loopback (dnsmasq): each record FOUND, MISSING or
WRONG with what was seen, and a DNS that is down or silent reported per record (ERROR, TIMEOUT), never a crash,
and never a reason to drop a domain's verified state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from emailkit.domain.runtime import Runtime
from emailkit.domain.sending_domains.config import DomainConfig
from tests.support.dns_server import Zone, black_hole, closed_port, dns_server
from tests.support.graphql import GQL
from tests.support.sending_domains import create_domain, records, verify_domain, zone_for

INCLUDE = "spf.mailer.test"
BOUNCES = "bounce.emailkit.test"


def configure(runtime: Runtime, port: int, *, timeout: float = 2.0) -> None:
    runtime.domains = DomainConfig(
        nameservers=(("127.0.0.1", port),),
        dns_timeout=timeout,
        spf_include=INCLUDE,
        bounce_domain=BOUNCES,
    )


async def made(gql: GQL, runtime: Runtime, name: str = "shop.example.test") -> dict[str, Any]:
    # The records asked for depend on the configuration: the same one as the checks'.
    configure(runtime, 53)
    out = await create_domain(gql, name, ed25519=True)
    assert out["userErrors"] == []
    domain: dict[str, Any] = out["sendingDomain"]
    return domain


def statuses(domain: dict[str, Any]) -> dict[str, str]:
    return {kind: r["status"] for kind, r in records(domain).items()}


async def test_every_record_published_verifies_the_domain(gql: GQL, runtime: Runtime, tmp_path: Path) -> None:
    domain = await made(gql, runtime)
    # The RSA key's record is longer than one TXT string: published as several, read as one.
    assert len(records(domain)["DKIM"]["value"]) > 255
    async with dns_server(zone_for([domain]), tmp_path) as port:
        configure(runtime, port)
        out = await verify_domain(gql, domain["id"])
    assert out["userErrors"] == []
    checked = out["sendingDomain"]
    assert statuses(checked) == {
        "DKIM": "FOUND",
        "DKIM_ED25519": "FOUND",
        "SPF": "FOUND",
        "DMARC": "FOUND",
        "RETURN_PATH": "FOUND",
    }
    assert checked["verified"] is True
    assert checked["verifiedAt"] is not None and checked["lastCheckedAt"] is not None
    for record in checked["dnsRecords"]:
        assert record["seen"] == [record["value"]], record
        assert record["detail"] is None and record["checkedAt"] == checked["lastCheckedAt"]


async def test_missing_records_are_reported_and_leave_the_domain_unverified(
    gql: GQL, runtime: Runtime, tmp_path: Path
) -> None:
    domain = await made(gql, runtime)
    zone = zone_for([domain], skip=frozenset({"DKIM", "SPF", "DMARC", "RETURN_PATH"}))
    async with dns_server(zone, tmp_path) as port:
        configure(runtime, port)
        checked = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    assert statuses(checked) == {
        "DKIM": "MISSING",
        "DKIM_ED25519": "FOUND",
        "SPF": "MISSING",
        "DMARC": "MISSING",
        "RETURN_PATH": "MISSING",
    }
    assert checked["verified"] is False and checked["verifiedAt"] is None
    assert checked["lastCheckedAt"] is not None
    assert all(r["seen"] == [] for r in checked["dnsRecords"] if r["status"] == "MISSING")


async def test_optional_records_do_not_hold_verification_back(
    gql: GQL, runtime: Runtime, tmp_path: Path
) -> None:
    domain = await made(gql, runtime)
    async with dns_server(zone_for([domain], skip=frozenset({"DMARC", "RETURN_PATH"})), tmp_path) as port:
        configure(runtime, port)
        checked = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    assert statuses(checked)["DMARC"] == "MISSING" and checked["verified"] is True


async def test_wrong_records_say_what_was_seen(gql: GQL, runtime: Runtime, tmp_path: Path) -> None:
    domain = await made(gql, runtime)
    # Another domain's key, as after pasting the wrong record; an SPF record without our include; two DMARC
    # records; a return path pointing elsewhere.
    other = await made(gql, runtime, "other.example.test")
    foreign_key = records(other)["DKIM"]["value"]
    zone = zone_for(
        [domain],
        skip=frozenset({"DMARC"}),
        replace={
            "DKIM": foreign_key,
            "SPF": "v=spf1 include:_spf.elsewhere.test -all",
            "RETURN_PATH": "x.test",
        },
        extra_txt=[
            ("_dmarc.shop.example.test", "v=DMARC1; p=none"),
            ("_dmarc.shop.example.test", "v=DMARC1; p=reject"),
            ("shop.example.test", "google-site-verification=abc"),
        ],
    )
    async with dns_server(zone, tmp_path) as port:
        configure(runtime, port)
        checked = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    found = records(checked)
    assert statuses(checked) == {
        "DKIM": "WRONG",
        "DKIM_ED25519": "FOUND",
        "SPF": "WRONG",
        "DMARC": "WRONG",
        "RETURN_PATH": "WRONG",
    }
    assert found["DKIM"]["seen"] == [foreign_key]
    assert "not this domain's key" in found["DKIM"]["detail"]
    # Only the SPF record is shown, not the domain's other TXT records.
    assert found["SPF"]["seen"] == ["v=spf1 include:_spf.elsewhere.test -all"]
    assert f"include:{INCLUDE}" in found["SPF"]["detail"]
    assert sorted(found["DMARC"]["seen"]) == ["v=DMARC1; p=none", "v=DMARC1; p=reject"]
    assert found["RETURN_PATH"]["seen"] == ["x.test"]
    assert checked["verified"] is False


async def test_two_spf_records_are_wrong(gql: GQL, runtime: Runtime, tmp_path: Path) -> None:
    domain = await made(gql, runtime)
    zone = zone_for([domain], extra_txt=[("shop.example.test", f"v=spf1 include:{INCLUDE} mx ~all")])
    async with dns_server(zone, tmp_path) as port:
        configure(runtime, port)
        checked = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    spf = records(checked)["SPF"]
    assert spf["status"] == "WRONG" and len(spf["seen"]) == 2 and "more than one" in spf["detail"]
    assert checked["verified"] is False


async def test_a_dns_that_is_down_or_silent_is_a_status_and_keeps_the_verified_state(
    gql: GQL, runtime: Runtime, tmp_path: Path
) -> None:
    domain = await made(gql, runtime)
    async with dns_server(zone_for([domain]), tmp_path) as port:
        configure(runtime, port)
        verified = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    assert verified["verified"] is True

    # dnsmasq is gone: nothing listens on its port any more, and over UDP that is silence.
    configure(runtime, closed_port(), timeout=0.5)
    down = await verify_domain(gql, domain["id"])
    assert down["userErrors"] == []
    assert set(statuses(down["sendingDomain"]).values()) == {"TIMEOUT"}
    assert all("no answer" in r["detail"] for r in down["sendingDomain"]["dnsRecords"])

    # A server that refuses to answer for the domain (not its zone, no upstream).
    async with dns_server(Zone(local=["elsewhere.test"]), tmp_path) as port:
        configure(runtime, port)
        refused = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    assert set(statuses(refused).values()) == {"ERROR"}
    assert all("REFUSED" in r["detail"] for r in refused["dnsRecords"])
    assert refused["verified"] is True

    with black_hole() as silent:
        configure(runtime, silent, timeout=0.5)
        started = time.monotonic()
        quiet = (await verify_domain(gql, domain["id"]))["sendingDomain"]
        # The five lookups run side by side, each within the timeout.
        assert time.monotonic() - started < 5
    assert set(statuses(quiet).values()) == {"TIMEOUT"}
    assert quiet["verified"] is True and quiet["verifiedAt"] == verified["verifiedAt"]
    assert quiet["lastCheckedAt"] > verified["lastCheckedAt"]

    # A definite answer that the key is gone does unverify it.
    async with dns_server(zone_for([domain], skip=frozenset({"DKIM"})), tmp_path) as port:
        configure(runtime, port)
        gone = (await verify_domain(gql, domain["id"]))["sendingDomain"]
    assert statuses(gone)["DKIM"] == "MISSING"
    assert gone["verified"] is False and gone["verifiedAt"] is None
