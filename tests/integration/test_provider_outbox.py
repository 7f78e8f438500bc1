"""The outbox provider writes one .eml file per delivery, and the registry builds providers from settings."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emailkit.domain.ports.provider import DELIVERY_HEADER, Address, OutgoingMessage
from emailkit.providers.outbox import OutboxProvider
from emailkit.providers.registry import build_provider
from emailkit.providers.sendgrid import SendGridProvider
from emailkit.providers.ses import SesProvider
from emailkit.providers.smtp import SmtpProvider
from emailkit.settings import Settings, SettingsError


def message(i: int, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"c1-s{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", "Zoë"),
        "from_": Address("news@news.example.com", "News"),
        "subject": f"Grüße #{i}",
        "html": f"<p>Hallo {i}</p>",
        "text": f"Hallo {i}",
        "headers": {
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def read(path: Path) -> Any:
    return BytesParser(policy=default).parsebytes(path.read_bytes())


async def test_each_message_becomes_one_eml_file(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    provider = OutboxProvider(outbox)
    results = await provider.send_batch([message(i) for i in range(3)])
    assert [r.delivery_id for r in results] == ["c1-s0", "c1-s1", "c1-s2"]
    assert all(r.ok for r in results)
    assert names(outbox) == ["c1-s0.eml", "c1-s1.eml", "c1-s2.eml"]
    for i, result in enumerate(results):
        msg = read(outbox / f"c1-s{i}.eml")
        assert msg["Subject"] == f"Grüße #{i}"
        assert msg[DELIVERY_HEADER] == f"c1-s{i}"
        assert msg["Message-ID"] == f"<{result.provider_message_id}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_resending_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    await provider.send_batch([message(1)])
    await provider.send_batch([message(1, subject="second attempt")])
    assert names(tmp_path) == ["c1-s1.eml"]
    assert read(tmp_path / "c1-s1.eml")["Subject"] == "second attempt"


async def test_unencodable_message_fails_alone(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    results = await provider.send_batch([message(1), message(2, to=Address("jörg@example.org")), message(3)])
    assert [r.ok for r in results] == [True, False, True]
    assert not results[1].transient and "SMTPUTF8" in (results[1].error or "")
    assert names(tmp_path) == ["c1-s1.eml", "c1-s3.eml"]


async def test_unwritable_outbox_is_a_transient_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the outbox should be")
    results = await OutboxProvider(blocker / "outbox").send_batch([message(1), message(2)])
    assert all(not r.ok and r.transient and "outbox unavailable" in (r.error or "") for r in results)


async def test_the_envelope_sender_is_written_as_return_path_when_it_is_not_the_from(tmp_path: Path) -> None:
    verp = "bounce+aekdvheg4d5iivlvvi@bounces.example.com"
    same = Address("news@news.example.com")
    results = await OutboxProvider(tmp_path).send_batch(
        [message(1, sender=verp), message(2, sender=same.email), message(3, sender="x@y\r\nBcc: z@w")]
    )
    assert all(r.ok for r in results)
    first = (tmp_path / "c1-s1.eml").read_bytes()
    assert first.startswith(f"Return-Path: <{verp}>\r\n".encode())
    assert BytesParser(policy=default).parsebytes(first)["Return-Path"] == f"<{verp}>"
    # Nothing to add when the envelope sender is the From, and never a line break smuggled into a header.
    assert b"Return-Path" not in (tmp_path / "c1-s2.eml").read_bytes()
    assert b"Return-Path" not in (tmp_path / "c1-s3.eml").read_bytes()


async def test_dkim_signed_outbox_files_verify(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    settings = Settings(
        outbox_dir=tmp_path / "out",
        dkim_domain="news.example.com",
        dkim_selector="mail",
        dkim_private_key_file=key_file,
    )
    provider = build_provider(settings)
    assert isinstance(provider, OutboxProvider)
    assert (await provider.send_batch([message(7)]))[0].ok
    raw = (tmp_path / "out" / "c1-s7.eml").read_bytes()
    # The envelope sender first, as the final MTA adds it (outside the signature), then the signature.
    assert raw.startswith(
        b"Return-Path: <bounces@news.example.com>\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=news.example.com;"
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)


def test_registry_switches_provider_with_two_variables(tmp_path: Path) -> None:
    assert isinstance(build_provider(Settings(outbox_dir=tmp_path)), OutboxProvider)
    smtp = build_provider(Settings(provider="smtp", smtp_url="smtp://u:p@mail.example.com:587?tls=starttls"))
    assert isinstance(smtp, SmtpProvider) and smtp.config.tls == "starttls"
    assert isinstance(
        build_provider(Settings(provider="sendgrid", sendgrid_api_key="SG.x")), SendGridProvider
    )
    ses = build_provider(
        Settings(
            provider="ses", ses_access_key_id="AKIA", ses_secret_access_key="secret", ses_region="eu-west-1"
        )
    )
    assert (
        isinstance(ses, SesProvider)
        and ses.url == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"provider": "smtp"}, "EMAILKIT_SMTP_URL"),
        ({"provider": "smtp", "smtp_url": "smtp://h?tls=sometimes"}, "EMAILKIT_SMTP_URL"),
        ({"provider": "smtp", "smtp_url": "smtp://h?cafile=/nonexistent/ca.pem"}, "EMAILKIT_SMTP_URL"),
        ({"provider": "sendgrid"}, "EMAILKIT_SENDGRID_API_KEY"),
        ({"provider": "ses", "ses_access_key_id": "AKIA"}, "EMAILKIT_SES_SECRET_ACCESS_KEY"),
        ({"dkim_domain": "example.com"}, "EMAILKIT_DKIM_SELECTOR"),
        (
            {"dkim_domain": "example.com", "dkim_selector": "s", "dkim_private_key": "junk"},
            "EMAILKIT_DKIM_PRIVATE_KEY",
        ),
    ],
)
def test_registry_names_the_missing_or_bad_variable(overrides: dict[str, Any], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        build_provider(Settings(**overrides))


def test_smtp_url_password_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        build_provider(Settings(provider="smtp", smtp_url="smtp://user:hunter2@h?tls=sometimes"))
    assert "hunter2" not in str(info.value)


async def test_commit_hook_runs_once_before_anything_is_written(tmp_path: Path) -> None:
    seen: list[tuple[list[str], list[str]]] = []

    async def on_commit(ids: Sequence[str]) -> None:
        seen.append((list(ids), names(tmp_path)))

    provider = OutboxProvider(tmp_path)
    results = await provider.send_batch(
        [message(1), message(2, to=Address("jörg@example.org")), message(3)], on_commit=on_commit
    )
    assert [r.ok for r in results] == [True, False, True]
    assert seen == [(["c1-s1", "c1-s3"], [])]


async def test_failing_commit_hook_sends_nothing(tmp_path: Path) -> None:
    async def on_commit(ids: Sequence[str]) -> None:
        raise RuntimeError("database unavailable")

    with pytest.raises(RuntimeError, match="database unavailable"):
        await OutboxProvider(tmp_path).send_batch([message(1)], on_commit=on_commit)
    assert names(tmp_path) == []


async def test_inline_dkim_key_with_escaped_line_breaks(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    one_line = pem.replace("\n", "\\n")
    provider = build_provider(
        Settings(
            outbox_dir=tmp_path, dkim_domain="news.example.com", dkim_selector="s", dkim_private_key=one_line
        )
    )
    assert (await provider.send_batch([message(1)]))[0].ok
    raw = (tmp_path / "c1-s1.eml").read_bytes()
    assert raw.startswith(b"Return-Path: <bounces@news.example.com>\r\nDKIM-Signature: ")
