"""The sending domains API: keys made on the server and never shown, the DNS records to publish (the DKIM record's
key is the domain's own), userErrors with stable codes, ADMIN only, and workspaces kept apart."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.domain import sealing
from emailkit.domain.errors import DomainError
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending_domains import service
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.keys import PURPOSE
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.graphql import GQL, data
from tests.support.sending_domains import DELETE, LIST, ONE, create_domain, records, verify_domain


def _tags(value: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in value.split(";"))}


async def _row(db: Database, global_id: str) -> SendingDomain:
    async with db.session() as session:
        row = await session.get(SendingDomain, globalid.pk_of(global_id, "SendingDomain"))
    assert row is not None
    return row


async def test_create_makes_a_key_pair_and_the_records_to_publish(
    gql: GQL, db: Database, runtime: Runtime
) -> None:
    runtime.domains = DomainConfig(spf_include="spf.mailer.test", bounce_domain="bounce.emailkit.test")
    out = await create_domain(gql, "Shop.Example.com")
    assert out["userErrors"] == []
    domain = out["sendingDomain"]
    assert domain["domain"] == "shop.example.com"
    assert domain["selector"].startswith("ek") and domain["ed25519Selector"] is None
    assert domain["verified"] is False and domain["verifiedAt"] is None and domain["lastCheckedAt"] is None
    found = records(domain)
    assert list(found) == ["DKIM", "SPF", "DMARC", "RETURN_PATH"]
    dkim = found["DKIM"]
    assert (dkim["type"], dkim["name"], dkim["required"]) == (
        "TXT",
        f"{domain['selector']}._domainkey.shop.example.com",
        True,
    )
    assert {r["status"] for r in found.values()} == {"UNCHECKED"}
    # The published key is the public half of the key the server signs with.
    tags = _tags(dkim["value"])
    assert (tags["v"], tags["k"]) == ("DKIM1", "rsa")
    row = await _row(db, domain["id"])
    private = serialization.load_pem_private_key(
        sealing.unseal(row.private_key_sealed, TEST_SECRET, purpose=PURPOSE).encode(), password=None
    )
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert tags["p"] == base64.b64encode(spki).decode()
    assert found["SPF"] == {
        **found["SPF"],
        "type": "TXT",
        "name": "shop.example.com",
        "value": "v=spf1 include:spf.mailer.test ~all",
        "required": True,
    }
    assert found["DMARC"]["name"] == "_dmarc.shop.example.com"
    assert found["DMARC"]["value"] == "v=DMARC1; p=none; rua=mailto:dmarc-reports@shop.example.com"
    assert found["DMARC"]["required"] is False
    assert (found["RETURN_PATH"]["type"], found["RETURN_PATH"]["name"], found["RETURN_PATH"]["value"]) == (
        "CNAME",
        "bounces.shop.example.com",
        "bounce.emailkit.test",
    )


async def test_ed25519_key_on_request_and_by_configuration(gql: GQL, db: Database, runtime: Runtime) -> None:
    asked = (await create_domain(gql, "one.example.com", ed25519=True))["sendingDomain"]
    runtime.domains = DomainConfig(ed25519=True)
    configured = (await create_domain(gql, "two.example.com"))["sendingDomain"]
    declined = (await create_domain(gql, "three.example.com", ed25519=False))["sendingDomain"]
    assert declined["ed25519Selector"] is None and "DKIM_ED25519" not in records(declined)
    for domain in (asked, configured):
        record = records(domain)["DKIM_ED25519"]
        assert record["name"] == f"{domain['ed25519Selector']}._domainkey.{domain['domain']}"
        assert domain["ed25519Selector"] != domain["selector"]
        tags = _tags(record["value"])
        assert tags["k"] == "ed25519"
        row = await _row(db, domain["id"])
        assert row.ed25519_private_key_sealed is not None
        private = serialization.load_pem_private_key(
            sealing.unseal(row.ed25519_private_key_sealed, TEST_SECRET, purpose=PURPOSE).encode(),
            password=None,
        )
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert base64.b64decode(tags["p"]) == raw


async def test_private_keys_are_sealed_at_rest_never_returned_nor_logged(
    gql: GQL, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = await gql(
        'mutation { createSendingDomain(input: {domain: "sealed.example.com", ed25519: true}) { sendingDomain '
        "{ id } userErrors { code } } }"
    )
    domain_id = data(body)["createSendingDomain"]["sendingDomain"]["id"]
    every_field = await gql(ONE.replace("dnsRecords {", "__typename dnsRecords {"), {"id": domain_id})
    row = await _row(db, domain_id)
    pems = [
        sealing.unseal(s, TEST_SECRET, purpose=PURPOSE)
        for s in (row.private_key_sealed, row.ed25519_private_key_sealed)
        if s is not None
    ]
    assert len(pems) == 2
    for sealed in (row.private_key_sealed, row.ed25519_private_key_sealed):
        assert sealed is not None and sealed.startswith("v1:") and "PRIVATE" not in sealed
    # Sealed for this use only: another purpose does not open it.
    with pytest.raises(sealing.SecretUnreadable):
        sealing.unseal(row.private_key_sealed, TEST_SECRET, purpose=b"emailkit webhook endpoint secrets")
    shown = repr(body) + repr(every_field) + caplog.text
    body_of = [pem.split("-----")[2].strip().splitlines()[0] for pem in pems]
    assert "PRIVATE KEY" not in shown
    for line in body_of:
        assert line not in shown


@pytest.mark.parametrize(
    "text",
    [
        "192.0.2.1",
        "2001:db8::1",
        "example.com.",
        "localhost",
        "exa mple.com",
        "https://example.com",
        "news@example.com",
        "-bad.example.com",
        "example.123",
        "a" * 64 + ".example.com",
        "",
    ],
)
async def test_an_invalid_domain_is_refused(gql: GQL, text: str) -> None:
    out = await create_domain(gql, text)
    assert out["sendingDomain"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("domain", "INVALID_DOMAIN")]


async def test_international_names_are_kept_in_their_ascii_form_and_duplicates_refused(gql: GQL) -> None:
    made = await create_domain(gql, "Bücher.Example")
    assert made["sendingDomain"]["domain"] == "xn--bcher-kva.example"
    for again in ("bücher.example", "XN--BCHER-KVA.example"):
        out = await create_domain(gql, again)
        assert out["sendingDomain"] is None
        assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("domain", "DUPLICATE_DOMAIN")]


async def test_list_one_and_delete(gql: GQL) -> None:
    ids = [(await create_domain(gql, f"d{i}.example.com"))["sendingDomain"]["id"] for i in range(3)]
    first = data(await gql(LIST))["sendingDomains"]
    assert first["totalCount"] == 3 and first["pageInfo"]["hasNextPage"] is True
    rest = data(await gql(LIST, {"after": first["pageInfo"]["endCursor"]}))["sendingDomains"]
    assert [e["node"]["id"] for e in first["edges"] + rest["edges"]] == ids
    assert data(await gql(ONE, {"id": ids[1]}))["sendingDomain"]["domain"] == "d1.example.com"
    deleted = data(await gql(DELETE, {"i": {"id": ids[1]}}))["deleteSendingDomain"]
    assert deleted == {"deletedId": ids[1], "userErrors": []}
    assert data(await gql(ONE, {"id": ids[1]}))["sendingDomain"] is None
    again = data(await gql(DELETE, {"i": {"id": ids[1]}}))["deleteSendingDomain"]
    assert again == {"deletedId": None, "userErrors": [{"field": "id", "code": "SENDING_DOMAIN_NOT_FOUND"}]}
    # Deleted, the name can be added again (with new keys).
    assert (await create_domain(gql, "d1.example.com"))["userErrors"] == []


async def test_admin_keys_only(gql: GQL, db: Database) -> None:
    domain_id = (await create_domain(gql, "admins.example.com"))["sendingDomain"]["id"]
    for role in (Role.EDITOR, Role.VIEWER):
        key = await make_key(db, role, role.value)
        for document, variables in (
            (
                'mutation { createSendingDomain(input: {domain: "x.example.com"}) { userErrors { code } } }',
                {},
            ),
            (
                "mutation($i: SendingDomainIdInput!) { verifySendingDomain(input: $i) { userErrors { code } } }",
                {"i": {"id": domain_id}},
            ),
            (DELETE, {"i": {"id": domain_id}}),
            (ONE, {"id": domain_id}),
            (LIST, {}),
        ):
            body = await gql(document, variables, key=key)
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (role, document)
    async with db.session() as session:
        assert (await session.scalars(select(SendingDomain.domain))).all() == ["admins.example.com"]


async def test_a_workspace_neither_sees_nor_verifies_nor_deletes_another_ones_domain(
    gql: GQL, db: Database
) -> None:
    other = await make_workspace(db, "other")
    other_key = await make_workspace_key(db, other)
    theirs = (await create_domain(gql, "theirs.example.com", key=other_key))["sendingDomain"]["id"]
    # The same name in two workspaces is two domains with keys of their own.
    mine = (await create_domain(gql, "theirs.example.com"))["sendingDomain"]["id"]
    assert mine != theirs
    assert data(await gql(ONE, {"id": theirs}))["sendingDomain"] is None
    verified = await verify_domain(gql, theirs)
    assert verified == {
        "sendingDomain": None,
        "userErrors": [
            {"field": "id", "code": "SENDING_DOMAIN_NOT_FOUND", "message": "Sending domain not found"}
        ],
    }
    deleted = data(await gql(DELETE, {"i": {"id": theirs}}))["deleteSendingDomain"]
    assert deleted["userErrors"] == [{"field": "id", "code": "SENDING_DOMAIN_NOT_FOUND"}]
    listed = data(await gql(LIST))["sendingDomains"]["edges"]
    assert [e["node"]["id"] for e in listed] == [mine]
    with workspace_scope(other):
        async with db.session() as session:
            row = await session.get(SendingDomain, globalid.pk_of(theirs, "SendingDomain"))
            assert row is not None and row.last_checked_at is None


def readme_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Sending domains") :]
    [example] = re.findall(r"```graphql\n(.*?)```", section[: section.index("\n## ", 1)], re.S)
    return str(example)


async def test_the_readme_example_as_written(gql: GQL) -> None:
    out = data(await gql(readme_example()))["createSendingDomain"]
    assert out["userErrors"] == []
    assert out["sendingDomain"]["domain"] == "news.example.com"
    assert [r["kind"] for r in out["sendingDomain"]["dnsRecords"]] == ["DKIM", "SPF", "DMARC"]


async def test_a_create_that_loses_a_race_is_a_duplicate_not_a_crash(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creates of one name that both passed the early check (as concurrent ones do on PostgreSQL): the unique
    constraint refuses the second insert, answered as DUPLICATE_DOMAIN, and its transaction goes on."""

    async def passes(session: object, name: str) -> None:
        return None

    monkeypatch.setattr(service, "_refuse_duplicate", passes)
    async with db.transaction() as session:
        await service.create_domain(session, "race.example.com", instance_secret=TEST_SECRET, ed25519=False)
    async with db.transaction() as session:
        with pytest.raises(DomainError) as caught:
            await service.create_domain(
                session, "race.example.com", instance_secret=TEST_SECRET, ed25519=False
            )
        assert [(e.field, e.code.value) for e in caught.value.errors] == [("domain", "DUPLICATE_DOMAIN")]
        assert (await session.scalars(select(SendingDomain.domain))).all() == ["race.example.com"]
