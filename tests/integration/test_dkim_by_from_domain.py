"""Mail is DKIM-signed with the key of its From domain's verified sending domain (RSA, plus Ed25519 as a second
signature where the domain has one), else with the environment's key (EMAILKIT_DKIM_*): through the outbox,
through SMTP to a real server, and through the campaign pipeline, each signature checked by dkimpy. Another
workspace's domain never signs; the keyring reads the database once per refresh, not per message."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import event, select, update

from emailkit.db.engine import Database
from emailkit.db.tables.sending import Campaign, Delivery
from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.domain.sending_domains import service
from emailkit.domain.sending_domains.keyring import SendingDomainKeyring, changes
from emailkit.providers.dkim import DkimSigner
from emailkit.providers.outbox import OutboxProvider
from tests.integration.test_pipeline import make_sender, seed, start
from tests.support.dkim_check import Dns, signatures, verify_all
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_workspace
from tests.support.sending_domains import mark_verified
from tests.support.smtp_provider import Sink, provider_for, smtp_server

DOMAIN = "shop.example.test"
ENV_DOMAIN = "env.example.test"


@pytest.fixture
def env_signer(tmp_path: Path) -> Iterator[tuple[DkimSigner, str, bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    yield DkimSigner(ENV_DOMAIN, "env", pem), "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode(), pem


async def add_domain(db: Database, name: str = DOMAIN, *, verified: bool = True) -> SendingDomain:
    async with db.transaction() as session:
        row = await service.create_domain(session, name, instance_secret=TEST_SECRET, ed25519=True)
    if verified:
        await mark_verified(db, row.id)
    changes.invalidate(row.workspace_id)
    async with db.session() as session:
        fresh = await session.get(SendingDomain, row.id)
    assert fresh is not None
    return fresh


def message(i: int, from_email: str, workspace_id: int | None = 1) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=f"m{i}",
        sender=from_email,
        to=Address(f"reader{i}@example.org"),
        from_=Address(from_email, "Shop"),
        subject=f"Offer {i}",
        html=f"<p>Offer {i}</p>",
        text=f"Offer {i}",
        headers={"List-Unsubscribe": "<https://mail.example.test/u/x>"},
        workspace_id=workspace_id,
    )


async def test_outbox_signs_with_the_from_domain_else_the_environment_key(
    db: Database, tmp_path: Path, env_signer: tuple[DkimSigner, str, bytes]
) -> None:
    row = await add_domain(db)
    other = await make_workspace(db, "other")
    dns = Dns()
    dns.add_domain(row)
    signer, env_record, _ = env_signer
    dns.txt[f"env._domainkey.{ENV_DOMAIN}"] = env_record
    provider = OutboxProvider(tmp_path, signer=signer, keyring=SendingDomainKeyring(db, TEST_SECRET))
    batch = [
        message(1, f"news@{DOMAIN}"),
        # A subdomain signs with its parent's key (DMARC's relaxed alignment accepts it).
        message(2, f"info@mail.{DOMAIN}"),
        message(3, "hello@unrelated.test"),
        # Another workspace's mail From the same domain: not its domain, so not its key.
        message(4, f"news@{DOMAIN}", workspace_id=other),
        # Mail of no workspace (none today, but the port allows it).
        message(5, f"news@{DOMAIN}", workspace_id=None),
    ]
    results = await provider.send_batch(batch)
    assert all(r.ok for r in results)
    signed = {m.delivery_id: verify_all((tmp_path / f"{m.delivery_id}.eml").read_bytes(), dns) for m in batch}
    both = sorted([(DOMAIN, "rsa-sha256"), (DOMAIN, "ed25519-sha256")])
    assert sorted(signed["m1"]) == both
    assert sorted(signed["m2"]) == both
    for fallback in ("m3", "m4", "m5"):
        assert signed[fallback] == [(ENV_DOMAIN, "rsa-sha256")]
    selectors = {s["a"]: s["s"] for s in signatures((tmp_path / "m1.eml").read_bytes())}
    assert selectors == {"rsa-sha256": row.selector, "ed25519-sha256": row.ed25519_selector}


async def test_unverified_or_deleted_domains_do_not_sign(db: Database, tmp_path: Path) -> None:
    row = await add_domain(db, verified=False)
    keyring = SendingDomainKeyring(db, TEST_SECRET)
    provider = OutboxProvider(tmp_path, keyring=keyring)
    await provider.send_batch([message(1, f"news@{DOMAIN}")])
    assert signatures((tmp_path / "m1.eml").read_bytes()) == []

    await mark_verified(db, row.id)
    changes.invalidate(1)
    await provider.send_batch([message(2, f"news@{DOMAIN}")])
    assert len(signatures((tmp_path / "m2.eml").read_bytes())) == 2

    async with db.transaction() as session:
        await service.delete_domain(session, row.id)
    changes.invalidate(1)
    await provider.send_batch([message(3, f"news@{DOMAIN}")])
    assert signatures((tmp_path / "m3.eml").read_bytes()) == []


async def test_smtp_signs_each_message_with_its_from_domain(db: Database) -> None:
    row = await add_domain(db)
    second = await add_domain(db, "brand.example.test")
    dns = Dns()
    dns.add_domain(row)
    dns.add_domain(second)
    sink = Sink()
    keyring = SendingDomainKeyring(db, TEST_SECRET)
    async with (
        smtp_server(sink) as port,
        provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=2, keyring=keyring) as provider,
    ):
        batch = [message(i, f"news@{DOMAIN}" if i % 2 else "news@brand.example.test") for i in range(6)]
        results = await provider.send_batch(batch)
    assert all(r.ok for r in results), [r.error for r in results]
    assert len(sink.delivered) == 6
    for _, rcpt, raw in sink.delivered:
        i = int(rcpt.removeprefix("reader").split("@")[0])
        expected = DOMAIN if i % 2 else "brand.example.test"
        assert sorted(verify_all(raw, dns)) == sorted(
            [(expected, "rsa-sha256"), (expected, "ed25519-sha256")]
        )


async def test_a_tampered_message_fails_both_signatures(db: Database, tmp_path: Path) -> None:
    row = await add_domain(db)
    dns = Dns()
    dns.add_domain(row)
    await OutboxProvider(tmp_path, keyring=SendingDomainKeyring(db, TEST_SECRET)).send_batch(
        [message(1, f"news@{DOMAIN}")]
    )
    raw = (tmp_path / "m1.eml").read_bytes().replace(b"Offer 1", b"Offer 9")
    checker = dkim.DKIM(raw)
    for index in (0, 1):
        # dkimpy reports a body hash mismatch by raising.
        with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
            checker.verify(idx=index, dnsfunc=dns)


async def test_the_keyring_reads_the_database_once_per_refresh_not_per_message(
    db: Database, tmp_path: Path
) -> None:
    now = [1000.0]
    keyring = SendingDomainKeyring(db, TEST_SECRET, refresh_seconds=5, clock=lambda: now[0])
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "sending_domains" in statement:
            reads.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        provider = OutboxProvider(tmp_path, keyring=keyring)
        # A workspace without sending domains: the default path.
        for start_at in (0, 100, 200):
            await provider.send_batch([message(start_at + i, "news@plain.test") for i in range(100)])
        assert len(reads) == 1
        now[0] += 5
        await provider.send_batch([message(300, "news@plain.test")])
        assert len(reads) == 2
        # A change made in this process is seen at once.
        changes.invalidate(1)
        await provider.send_batch([message(301, "news@plain.test")])
        assert len(reads) == 3
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_campaign_mail_is_signed_with_its_workspace_domain(db: Database, tmp_path: Path) -> None:
    row = await add_domain(db)
    dns = Dns()
    dns.add_domain(row)
    campaign_id, _ = await seed(db, n=3)
    async with db.transaction() as session:
        await session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(from_email=f"news@{DOMAIN}")
        )
    keyring = SendingDomainKeyring(db, TEST_SECRET)
    sender = make_sender(db, OutboxProvider(tmp_path, keyring=keyring))
    for batch_id in await start(db, campaign_id):
        await sender.run_batch(batch_id)
    async with db.session() as session:
        sent = list(
            (await session.scalars(select(Delivery.id).where(Delivery.campaign_id == campaign_id))).all()
        )
    files = [tmp_path / f"{d}.eml" for d in sent if (tmp_path / f"{d}.eml").exists()]
    assert len(files) == 3
    for path in files:
        assert sorted(verify_all(path.read_bytes(), dns)) == sorted(
            [(DOMAIN, "rsa-sha256"), (DOMAIN, "ed25519-sha256")]
        )


async def test_a_key_sealed_with_another_secret_signs_nothing_and_says_why(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await add_domain(db)
    keyring = SendingDomainKeyring(db, "another-secret-key-0123456789abcdef")
    await OutboxProvider(tmp_path, keyring=keyring).send_batch([message(1, f"news@{DOMAIN}")])
    assert signatures((tmp_path / "m1.eml").read_bytes()) == []
    assert "cannot be read with this EMAILKIT_SECRET_KEY" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


async def test_the_composition_root_hands_the_runtime_s_keyring_to_its_provider(
    db: Database, tmp_path: Path, env_signer: tuple[DkimSigner, str, bytes]
) -> None:
    from emailkit.app import build_runtime
    from emailkit.settings import Settings

    _, env_record, pem = env_signer
    # The environment's key, as EMAILKIT_DKIM_PRIVATE_KEY_FILE.
    key_file = tmp_path / "env.pem"
    key_file.write_bytes(pem)
    settings = Settings(
        database_url=db.url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        outbox_dir=tmp_path / "out",
        dkim_domain=ENV_DOMAIN,
        dkim_selector="env",
        dkim_private_key_file=key_file,
        require_verified_domains=True,
    )
    runtime = build_runtime(settings, db)
    assert runtime.domains.require_verified is True
    assert runtime.domains.trusted_domains == frozenset({ENV_DOMAIN})
    assert runtime.sending is not None
    row = await add_domain(db)
    dns = Dns()
    dns.add_domain(row)
    dns.txt[f"env._domainkey.{ENV_DOMAIN}"] = env_record
    try:
        provider = runtime.sending.provider
        await provider.send_batch([message(1, f"news@{DOMAIN}"), message(2, "news@other.test")])
    finally:
        await runtime.sending.close()
    out = tmp_path / "out"
    assert sorted(verify_all((out / "m1.eml").read_bytes(), dns)) == sorted(
        [(DOMAIN, "rsa-sha256"), (DOMAIN, "ed25519-sha256")]
    )
    assert verify_all((out / "m2.eml").read_bytes(), dns) == [(ENV_DOMAIN, "rsa-sha256")]
