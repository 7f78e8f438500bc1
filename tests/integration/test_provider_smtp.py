"""The smtp provider against a real SMTP server (aiosmtpd) on a free port.

aiosmtpd's Controller(port=0) fails its self-check, so servers are started with loop.create_server.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from emailkit.domain.ports.provider import DELIVERY_HEADER, Address, OutgoingMessage, SendResult
from emailkit.providers.dkim import DkimSigner
from emailkit.providers.smtp import REPORT_EVERY, SmtpProvider, parse_smtp_url
from emailkit.providers.smtp_session import MAX_CONNECTION_TRIES


@dataclass
class Sink:
    """aiosmtpd handler that records deliveries and misbehaves for chosen recipients."""

    pipelining: bool = True
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    drop_on_data: set[str] = field(default_factory=set)
    stall_on_data: set[str] = field(default_factory=set)
    delivered: list[tuple[str, str, bytes]] = field(default_factory=list)
    connections: int = 0
    protocols: list[SMTP] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt in self.drop_on_data:
            self.drop_on_data.discard(rcpt)
            assert server.transport is not None
            server.transport.abort()
            return "250 never sent"
        if rcpt in self.stall_on_data:
            await self.release.wait()
        if rcpt in self.data_replies:
            return self.data_replies[rcpt]
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.delivered.append((envelope.mail_from, rcpt, envelope.content))
        return "250 2.0.0 Ok: queued"

    def recipients(self) -> list[str]:
        return [rcpt for _, rcpt, _ in self.delivered]


@asynccontextmanager
async def smtp_server(
    sink: Sink, *, ssl_context: ssl.SSLContext | None = None, **kwargs: Any
) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        sink.connections += 1
        protocol = SMTP(sink, hostname="localhost", loop=loop, **kwargs)
        sink.protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        sink.release.set()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def provider_for(url: str, **kwargs: Any) -> AsyncIterator[SmtpProvider]:
    provider = SmtpProvider(parse_smtp_url(url), **kwargs)
    try:
        yield provider
    finally:
        await provider.close()


def message(i: int | str, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"d{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", f"User {i}"),
        "from_": Address("news@news.example.com", "Example News"),
        "subject": f"Issue {i}",
        "html": f"<p>Hello user {i}</p>",
        "text": f"Hello user {i}",
        "headers": {
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def parsed(raw: bytes) -> Any:
    return BytesParser(policy=default).parsebytes(raw)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_batches_reuse_one_connection(pipelining: bool) -> None:
    sink = Sink(pipelining=pipelining)
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        first = await p.send_batch([message(i) for i in range(20)])
        second = await p.send_batch([message(i) for i in range(20, 30)])
        assert p._pool is not None and p._pool._sessions[0].pipelining is pipelining
    results = first + second
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.delivery_id for r in results] == [f"d{i}" for i in range(30)]
    assert sink.connections == 1
    assert sink.recipients() == [f"user{i}@example.org" for i in range(30)]
    for result, (mail_from, rcpt, raw) in zip(results, sink.delivered, strict=True):
        msg = parsed(raw)
        assert mail_from == "bounces@news.example.com"
        assert msg[DELIVERY_HEADER] == result.delivery_id
        assert msg["Message-ID"] == f"<{result.provider_message_id}>"
        assert msg["To"].addresses[0].addr_spec == rcpt


async def test_pool_spreads_a_batch_over_its_sessions_and_sends_each_once() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=3) as p:
        results, more = await asyncio.gather(
            p.send_batch([message(i) for i in range(60)]), p.send_batch([message(i) for i in range(60, 90)])
        )
        assert p.connections_opened == 3
    assert all(r.ok for r in results + more)
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(90))
    assert sink.connections == 3


async def test_rejected_recipients_fail_permanently_and_the_rest_go_out() -> None:
    sink = Sink(
        rcpt_replies={
            "user3@example.org": "550 5.1.1 No such user",
            "user4@example.org": "553 5.1.3 Bad address",
        }
    )
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(8)])
    by_id = {r.delivery_id: r for r in results}
    assert not by_id["d3"].ok and not by_id["d3"].transient and by_id["d3"].error == "550 5.1.1 No such user"
    assert not by_id["d4"].ok and not by_id["d4"].transient and by_id["d4"].error.startswith("553")
    assert [r.delivery_id for r in results if r.ok] == ["d0", "d1", "d2", "d5", "d6", "d7"]
    assert sink.recipients() == [f"user{i}@example.org" for i in (0, 1, 2, 5, 6, 7)]
    # RSET cleared the failed transactions: no reconnect was needed.
    assert sink.connections == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_temporary_replies_are_transient(pipelining: bool) -> None:
    sink = Sink(
        pipelining=pipelining,
        rcpt_replies={
            "user1@example.org": "451 4.7.1 Greylisted, try again later",
            "user2@example.org": "421 4.3.2 Service shutting down",
        },
        data_replies={
            "user4@example.org": "452 4.3.1 Insufficient system storage",
            "user5@example.org": "554 5.6.0 Message rejected as spam",
        },
    )
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(7)])
    by_id = {r.delivery_id: r for r in results}
    assert by_id["d1"].transient and by_id["d1"].error.startswith("451 4.7.1")
    assert by_id["d2"].transient and by_id["d2"].error.startswith("421")
    assert by_id["d4"].transient and by_id["d4"].error.startswith("452")
    assert not by_id["d5"].transient and by_id["d5"].error.startswith("554")
    assert {r.delivery_id for r in results if r.ok} == {"d0", "d3", "d6"}
    assert sorted(sink.recipients()) == [f"user{i}@example.org" for i in (0, 3, 6)]
    # After a 421 the client stops using that session and opens a new one.
    assert sink.connections == 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_dropped_connection_reconnects_and_marks_only_the_affected_message(pipelining: bool) -> None:
    sink = Sink(pipelining=pipelining, drop_on_data={"user5@example.org"})
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(i) for i in range(12)])
    by_id = {r.delivery_id: r for r in results}
    affected = by_id["d5"]
    assert not affected.ok and affected.transient and "may have been delivered" in (affected.error or "")
    assert [r.delivery_id for r in results if not r.ok] == ["d5"]
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(12) if i != 5)
    assert sink.connections == 2


async def test_stale_pooled_session_is_replaced_without_failures() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        assert all(r.ok for r in await p.send_batch([message(i) for i in range(3)]))
        # The server hangs up on the idle session (as servers do after their idle timeout).
        for protocol in sink.protocols:
            assert protocol.transport is not None
            protocol.transport.close()
        results = await p.send_batch([message(i) for i in range(3, 6)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(sink.recipients()) == sorted(f"user{i}@example.org" for i in range(6))
    assert sink.connections == 2


async def test_unreachable_server_gives_transient_failures() -> None:
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with provider_for(f"smtp://127.0.0.1:{port}?tls=none&timeout=5", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(4)])
    assert [r.delivery_id for r in results] == ["d0", "d1", "d2", "d3"]
    assert all(not r.ok and r.transient and "cannot open an SMTP session" in (r.error or "") for r in results)


async def test_unresponsive_server_times_out_as_transient() -> None:
    sink = Sink(stall_on_data={"user1@example.org"})
    async with (
        smtp_server(sink) as port,
        provider_for(f"smtp://127.0.0.1:{port}?tls=none&timeout=0.5", pool_size=1) as p,
    ):
        results = await p.send_batch([message(i) for i in range(3)])
    assert results[0].ok and results[2].ok
    assert (
        not results[1].ok and results[1].transient and "no reply from the server" in (results[1].error or "")
    )


async def test_unencodable_addresses_fail_without_touching_the_network() -> None:
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch(
            [
                message(0),
                message(1, to=Address("jörg@example.org")),
                message(2, to=Address("user2@bücher.example")),
            ]
        )
    assert results[0].ok and results[2].ok
    assert not results[1].ok and not results[1].transient and "SMTPUTF8" in (results[1].error or "")
    assert sink.recipients() == ["user0@example.org", "user2@xn--bcher-kva.example"]


async def test_dot_lines_are_transparent() -> None:
    text = ".starts with a dot\n.\n..two dots\nend"
    sink = Sink()
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=1) as p:
        results = await p.send_batch([message(0, text=text, html=None), message(1)])
    assert all(r.ok for r in results)
    body = parsed(sink.delivered[0][2]).get_content().replace("\r\n", "\n")
    assert body == text + "\n"


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


def test_connection_tries_bound() -> None:
    # A message is retried on fresh connections a bounded number of times within one batch.
    assert 1 < MAX_CONNECTION_TRIES <= 5


@pytest.mark.parametrize("pipelining", ["true", "false"])
async def test_commit_hook_runs_for_each_message_right_before_its_body_is_sent(pipelining: str) -> None:
    sink = Sink()
    seen: list[tuple[list[str], list[str]]] = []

    async def on_commit(ids: Sequence[str]) -> None:
        seen.append((list(ids), sink.recipients()))

    url = f"smtp://127.0.0.1:{{port}}?tls=none&pipelining={pipelining}"
    async with smtp_server(sink) as port, provider_for(url.format(port=port), pool_size=1) as p:
        messages = [message(0), message(1, to=Address("jörg@example.org")), message(2), message(3)]
        results = await p.send_batch(messages, on_commit=on_commit)

        async def refuse(ids: Sequence[str]) -> None:
            raise RuntimeError("ledger unavailable")

        with pytest.raises(RuntimeError, match="ledger unavailable"):
            await p.send_batch([message(4)], on_commit=refuse)
    assert [r.ok for r in results] == [True, False, True, True]
    # Each message is committed on its own, once the server waits for its body (the earlier ones are
    # delivered by then, it is not); the one that cannot be expressed never is.
    assert seen == [
        (["d0"], []),
        (["d2"], ["user0@example.org"]),
        (["d3"], ["user0@example.org", "user2@example.org"]),
    ]
    # A hook that fails stops that message before any of its body went out.
    assert sorted(sink.recipients()) == ["user0@example.org", "user2@example.org", "user3@example.org"]


async def test_results_are_reported_a_group_at_a_time_while_the_batch_is_still_sending() -> None:
    sink = Sink()
    reported: list[tuple[list[str], int]] = []

    async def on_result(results: Sequence[SendResult]) -> None:
        # What the server had accepted when the group was handed over.
        reported.append(([r.delivery_id for r in results], len(sink.recipients())))

    count = 3 * REPORT_EVERY + 7
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(count)], on_result=on_result)
    assert all(r.ok for r in results) and len(sink.recipients()) == count
    assert len(reported) >= 2
    assert all(len(ids) >= REPORT_EVERY for ids, _ in reported)
    # Groups come as replies arrive, while later messages are still to go out, and each result once.
    assert reported[0][1] < count
    flat = [i for ids, _ in reported for i in ids]
    assert len(flat) == len(set(flat)) and set(flat) < {r.delivery_id for r in results}
    # The results a group reported are the batch's own final ones.
    by_id = {r.delivery_id: r for r in results}
    assert all(by_id[i].ok for i in flat)


async def test_a_failing_result_hook_stops_the_reports_not_the_sending() -> None:
    sink = Sink()
    calls = 0

    async def broken(results: Sequence[SendResult]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("ledger unavailable")

    count = 2 * REPORT_EVERY + 3
    async with smtp_server(sink) as port, provider_for(f"smtp://127.0.0.1:{port}?tls=none", pool_size=2) as p:
        results = await p.send_batch([message(i) for i in range(count)], on_result=broken)
    # The caller gets every result back, to record the ones no report took.
    assert calls == 1
    assert [r.delivery_id for r in results] == [f"d{i}" for i in range(count)]
    assert all(r.ok for r in results) and len(sink.recipients()) == count
