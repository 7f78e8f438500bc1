"""probe() of each provider we own against a real peer: it connects and authenticates, sends nothing, and says
what the peer answered (aiosmtpd with STARTTLS and AUTH, moto's SES with signatures checked, a local server
answering SendGrid's GET /v3/scopes as documented, a directory)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from emailkit.domain.ports.provider import SenderConfigError
from emailkit.providers import outbox, sendgrid, ses, smtp
from emailkit.providers.senders import SenderProviderFactory
from tests.integration.test_provider_ses import signatures_enforced
from tests.integration.test_provider_smtp_security_and_url import check_password, self_signed
from tests.support.live_server import live_server
from tests.support.smtp_provider import Sink, smtp_server

REGION = "us-east-1"


async def test_smtp_probe_upgrades_authenticates_and_sends_nothing(tmp_path: Path) -> None:
    server_context, _ = self_signed(tmp_path)
    sink = Sink()
    async with smtp_server(
        sink,
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=check_password,
    ) as port:
        settings = {"url": f"smtp://127.0.0.1:{port}?tls=starttls&verify=false&timeout=5"}
        good = smtp.from_sender(settings, {"username": "mailer", "password": "p@ss word"}, pool_size=1)
        bad = smtp.from_sender(settings, {"username": "mailer", "password": "wrong"}, pool_size=1)
        try:
            accepted = await good.probe()
            refused = await bad.probe()
        finally:
            await good.close()
            await bad.close()
    assert accepted.ok and accepted.message.startswith("235"), accepted
    assert not refused.ok and refused.message.startswith("535"), refused
    assert all(proto._tls_protocol is not None for proto in sink.protocols)
    assert sink.delivered == []


async def test_smtp_probe_without_credentials_reports_the_greeting_and_an_unreachable_server() -> None:
    sink = Sink()
    async with smtp_server(sink) as port:
        provider = smtp.from_sender({"url": f"smtp://127.0.0.1:{port}?tls=none"}, {}, pool_size=1)
        answer = await provider.probe()
        await provider.close()
    assert answer.ok and answer.message.startswith("250"), answer
    # The port is closed now.
    gone = smtp.from_sender({"url": f"smtp://127.0.0.1:{port}?tls=none&timeout=2"}, {}, pool_size=1)
    unreachable = await gone.probe()
    assert not unreachable.ok and f"127.0.0.1:{port}" in unreachable.message


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


async def test_ses_probe_is_a_signed_call_that_moto_checks(moto_url: str) -> None:
    admin: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    # moto checks credentials and SigV4 signatures after the 3 admin calls that make the user and its key.
    with signatures_enforced(moto_url, admin_calls=3):
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="prober")
        iam.put_user_policy(
            UserName="prober",
            PolicyName="ses",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "ses:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="prober")["AccessKey"]
        settings = {"region": REGION, "endpointUrl": moto_url}
        good = ses.from_sender(
            settings,
            {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]},
            pool_size=2,
        )
        bad = ses.from_sender(
            settings, {"accessKeyId": key["AccessKeyId"], "secretAccessKey": "not-the-secret"}, pool_size=2
        )
        try:
            accepted = await good.probe()
            refused = await bad.probe()
        finally:
            await good.close()
            await bad.close()
    assert accepted.ok and "200" in accepted.message, accepted
    assert not refused.ok and "403" in refused.message and "SignatureDoesNotMatch" in refused.message, refused


KEYS = {"SG.full.key-0001": ["mail.send", "stats.read"], "SG.read.only-0002": ["stats.read"]}


async def scopes(request: Request) -> JSONResponse:
    # As documented: GET /v3/scopes lists the key's scopes; an unknown key is 401 with SendGrid's error body.
    auth = request.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ")
    if not auth.startswith("Bearer ") or key not in KEYS:
        return JSONResponse(
            {"errors": [{"field": None, "message": "authorization required"}]}, status_code=401
        )
    return JSONResponse({"scopes": KEYS[key]})


@pytest.fixture
async def sendgrid_url() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/v3/scopes", scopes)])
    async with live_server(app) as address:
        yield f"http://{address}"


@pytest.mark.parametrize(
    ("key", "ok", "said"),
    [
        ("SG.full.key-0001", True, "200"),
        ("SG.read.only-0002", False, "mail.send"),
        ("SG.unknown-0003", False, "401: authorization required"),
    ],
)
async def test_sendgrid_probe_reads_the_keys_scopes(sendgrid_url: str, key: str, ok: bool, said: str) -> None:
    provider = sendgrid.from_sender({"baseUrl": sendgrid_url}, {"apiKey": key}, pool_size=1)
    try:
        answer = await provider.probe()
    finally:
        await provider.close()
    assert answer.ok is ok and said in answer.message, answer


async def test_outbox_probe_writes_and_removes_a_file(tmp_path: Path) -> None:
    provider = outbox.from_sender({"dir": "brand-a"}, {}, pool_size=1, root=tmp_path)
    answer = await provider.probe()
    assert answer.ok, answer
    assert (tmp_path / "brand-a").is_dir() and list((tmp_path / "brand-a").iterdir()) == []
    # A file where the directory should be: not writable, whoever runs the test (root included).
    (tmp_path / "taken").write_text("not a directory")
    refused = await outbox.from_sender({"dir": "taken"}, {}, pool_size=1, root=tmp_path).probe()
    assert not refused.ok and "not writable" in refused.message


@pytest.mark.parametrize(
    ("type", "settings", "credentials", "field"),
    [
        ("SMTP", {}, {}, "url"),
        ("SMTP", {"url": "http://mail.example.com"}, {}, "url"),
        ("SMTP", {"url": "smtp://user:pw@mail.example.com"}, {}, "url"),
        ("SMTP", {"url": "smtp://mail.example.com?cafile=/etc/passwd"}, {}, "url"),
        ("SMTP", {"url": "smtp://mail.example.com", "port": 25}, {}, "port"),
        ("SMTP", {"url": "smtp://mail.example.com"}, {"username": "u"}, "password"),
        ("SES", {"region": "nowhere"}, {"accessKeyId": "a", "secretAccessKey": "b"}, "region"),
        ("SES", {"region": REGION}, {"accessKeyId": "a"}, "secretAccessKey"),
        (
            "SES",
            {"region": REGION, "endpointUrl": "ftp://x"},
            {"accessKeyId": "a", "secretAccessKey": "b"},
            "endpointUrl",
        ),
        ("SENDGRID", {}, {}, "apiKey"),
        ("OUTBOX", {"dir": "../elsewhere"}, {}, "dir"),
        ("OUTBOX", {"dir": "/etc"}, {}, "dir"),
        ("NOPE", {}, {}, "type"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, type: str, settings: dict[str, Any], credentials: dict[str, str], field: str
) -> None:
    with pytest.raises(SenderConfigError) as caught:
        SenderProviderFactory(outbox_root=tmp_path)(type, settings, credentials, pool_size=1)
    assert caught.value.field == field


def test_a_type_whose_module_is_missing_is_not_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emailkit.providers import senders

    monkeypatch.setitem(senders.MODULES, "BREVO", "emailkit.providers.no_such_module")
    with pytest.raises(SenderConfigError) as caught:
        SenderProviderFactory(outbox_root=tmp_path)("BREVO", {}, {"apiKey": "k"}, pool_size=1)
    assert caught.value.field == "type" and "not available" in caught.value.message
