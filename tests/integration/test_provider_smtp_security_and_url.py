"""The smtp provider's STARTTLS, implicit TLS, AUTH and DKIM signing against a real SMTP server (aiosmtpd),
and the parsing of its smtp:// URL.

The server and the messages come from tests.support.smtp_provider.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from emailkit.providers.dkim import DkimSigner
from emailkit.providers.smtp import parse_smtp_url
from tests.support.smtp_provider import Sink, message, parsed, provider_for, smtp_server


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    return server_context, cert_path


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"mailer" and data.password == b"p@ss word"
    # handled=False: aiosmtpd answers 535 itself on failure.
    return AuthResult(success=ok, handled=False)


async def test_starttls_and_auth(tmp_path: Path) -> None:
    server_context, cert = self_signed(tmp_path)
    sink = Sink()
    async with smtp_server(
        sink,
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=check_password,
    ) as port:
        url = f"smtp://mailer:p%40ss%20word@127.0.0.1:{port}?tls=starttls&cafile={cert}"
        async with provider_for(url, pool_size=1) as p:
            results = await p.send_batch([message(i) for i in range(5)])
        assert all(r.ok for r in results), [r.error for r in results]
        assert sink.recipients() == [f"user{i}@example.org" for i in range(5)]
        assert all(proto.session is None or proto.session.authenticated for proto in sink.protocols)
        assert all(proto._tls_protocol is not None for proto in sink.protocols)

        async with provider_for(url.replace("p%40ss%20word", "wrong") + "&timeout=5", pool_size=1) as p:
            refused = await p.send_batch([message(9)])
        assert not refused[0].ok and refused[0].transient and "535" in (refused[0].error or "")

        # An unverifiable certificate is refused unless verification is explicitly off.
        async with provider_for(url.replace(f"&cafile={cert}", "&timeout=5"), pool_size=1) as p:
            untrusted = await p.send_batch([message(10)])
        assert not untrusted[0].ok and "CERTIFICATE_VERIFY_FAILED" in (untrusted[0].error or "")
        async with provider_for(url.replace(f"&cafile={cert}", "&verify=false"), pool_size=1) as p:
            assert (await p.send_batch([message(11)]))[0].ok
    assert sink.recipients()[-1] == "user11@example.org"


async def test_implicit_tls(tmp_path: Path) -> None:
    server_context, cert = self_signed(tmp_path)
    sink = Sink()
    async with smtp_server(sink, ssl_context=server_context) as port:
        async with provider_for(f"smtps://127.0.0.1:{port}?cafile={cert}", pool_size=1) as p:
            assert p.config.tls == "ssl"
            results = await p.send_batch([message(i) for i in range(3)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert len(sink.delivered) == 3


async def test_dkim_signature_verifies_and_covers_list_unsubscribe() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = DkimSigner("news.example.com", "s2024", pem)
    record = signer.public_key_record().encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2024._domainkey.news.example.com."
        return record

    sink = Sink()
    async with (
        smtp_server(sink) as port,
        provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1, signer=signer) as p,
    ):
        html = "<p>Grüße   with  spaces \t and tabs</p>\n" * 50
        # ASCII bodies go out 7bit, so relaxed body canonicalisation meets the white space itself.
        spaced = "<p>runs   of  spaces\tand\t\ttabs </p>  \n\t\n\n\n"
        results = await p.send_batch(
            [message(0), message(1, html=html, subject="Café ☕"), message(2, html=spaced, text=" a  b \n\n")]
        )
    assert all(r.ok for r in results)
    assert b"runs   of  spaces\tand" in sink.delivered[2][2]
    for _, _, raw in sink.delivered:
        assert dkim.verify(raw, dnsfunc=dns), raw[:600]
        tags = dict(
            part.strip().split("=", 1)
            for part in parsed(raw)["DKIM-Signature"].replace("\r\n", "").replace("\t", "").split(";")
        )
        signed = tags["h"].split(":")
        for header in ("from", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"):
            assert header in signed
        assert tags["d"] == "news.example.com" and tags["s"] == "s2024" and tags["a"] == "rsa-sha256"
        # Tampering with a signed header breaks the signature.
        tampered = raw.replace(
            b"List-Unsubscribe: <https://mail.example.com/u/", b"List-Unsubscribe: <https://evil.example/u/"
        )
        assert not dkim.verify(tampered, dnsfunc=dns)


def test_url_parsing() -> None:
    config = parse_smtp_url(
        "smtp://user%40x:p%2Fw@mail.example.com:587?tls=starttls&timeout=10&helo=mx.example.com"
    )
    assert (config.host, config.port, config.username, config.password) == (
        "mail.example.com",
        587,
        "user@x",
        "p/w",
    )
    assert (config.tls, config.timeout, config.helo, config.verify) == (
        "starttls",
        10.0,
        "mx.example.com",
        True,
    )
    assert parse_smtp_url("smtps://mail.example.com").port == 465
    assert parse_smtp_url("smtp://mail.example.com").tls == "auto"
    assert parse_smtp_url("smtp://mail.example.com:465").tls == "ssl"
    assert parse_smtp_url("smtp://mail.example.com?tls=starttls").port == 587
    assert parse_smtp_url("smtp://relay?tls=none&pipelining=false").pipelining is False
    for bad, problem in [
        ("http://mail.example.com", "smtp://"),
        ("smtp://", "host"),
        ("smtp://h?tls=maybe", "tls must be"),
        ("smtp://h?tsl=none", "unknown option"),
        ("smtp://h?verify=perhaps", "verify must be"),
        ("smtp://h?timeout=soon", "timeout"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_smtp_url(bad)
