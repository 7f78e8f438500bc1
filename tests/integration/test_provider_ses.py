"""The ses provider against moto's SES server (which checks SigV4 signatures once auth is switched on)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from email.parser import BytesParser
from email.policy import default
from typing import Any

import boto3
import httpx
import pytest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer

from emailkit.domain.ports.provider import DELIVERY_HEADER, DELIVERY_TAG, Address, OutgoingMessage
from emailkit.providers.registry import build_provider
from emailkit.providers.ses import SesProvider
from emailkit.settings import Settings
from tests.support.handover import HandoverLog

REGION = "us-east-1"
VERIFIED = "news@news.example.com"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    admin = boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )
    # Sending is only allowed from a verified identity, as on real SES.
    admin.create_email_identity(EmailIdentity=VERIFIED)
    yield url
    server.stop()


def message(i: int, **overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": f"c3-s{i}",
        "sender": "bounces@news.example.com",
        "to": Address(f"user{i}@example.org", "Ada"),
        "from_": Address(VERIFIED, "Example News"),
        "subject": f"Issue {i} — Grüße",
        "html": f"<p>Hello {i}</p>",
        "text": f"Hello {i}",
        "headers": {"List-Unsubscribe": f"<https://mail.example.com/u/{i}>"},
        "tags": {"campaign": "3", "list name": "weekly news!"},
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def moto_raw_messages(url: str) -> dict[str, bytes]:
    data = httpx.get(f"{url}/moto-api/data.json").json()
    return {m["id"]: m["raw_data"].encode() for m in data["ses"]["RawMessage"]}


def sent_last_24h(url: str) -> float:
    v1 = boto3.client(
        "ses", endpoint_url=url, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="admin"
    )
    return float(v1.get_send_quota()["SentLast24Hours"])


@asynccontextmanager
async def recording_provider(
    url: str, **kwargs: Any
) -> AsyncIterator[tuple[SesProvider, list[httpx.Request]]]:
    requests: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        requests.append(request)

    client = httpx.AsyncClient(event_hooks={"request": [record]})
    provider = SesProvider(
        region=REGION,
        credentials=kwargs.pop("credentials", Credentials("AKIDEXAMPLE", "secret")),
        endpoint_url=url,
        client=client,
        **kwargs,
    )
    try:
        yield provider, requests
    finally:
        await provider.close()
        await client.aclose()


async def test_sends_raw_messages_with_tags_and_configuration_set(moto_url: str) -> None:
    before = sent_last_24h(moto_url)
    async with recording_provider(moto_url, configuration_set="marketing") as (provider, requests):
        results = await provider.send_batch([message(i) for i in range(3)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert sent_last_24h(moto_url) > before

    stored = moto_raw_messages(moto_url)
    for i, result in enumerate(results):
        assert result.provider_message_id in stored
        msg = BytesParser(policy=default).parsebytes(stored[result.provider_message_id])
        assert msg[DELIVERY_HEADER] == f"c3-s{i}"
        assert msg["Subject"] == f"Issue {i} — Grüße"
        assert msg["To"].addresses[0].addr_spec == f"user{i}@example.org"

    assert len(requests) == 3
    for i, request in enumerate(
        sorted(requests, key=lambda r: json.loads(r.content)["EmailTags"][0]["Value"])
    ):
        assert request.method == "POST" and request.url.path == "/v2/email/outbound-emails"
        auth = request.headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert f"/{REGION}/ses/aws4_request" in auth and "x-amz-date" in request.headers
        body = json.loads(request.content)
        assert body["FromEmailAddress"] == VERIFIED
        assert body["Destination"] == {"ToAddresses": [f"user{i}@example.org"]}
        assert body["ConfigurationSetName"] == "marketing"
        # Tag values may only hold letters, digits, '_' and '-'.
        assert body["EmailTags"] == [
            {"Name": DELIVERY_TAG, "Value": f"c3-s{i}"},
            {"Name": "campaign", "Value": "3"},
            {"Name": "list_name", "Value": "weekly_news_"},
        ]
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        assert raw.startswith(b"Date: ") and f"{DELIVERY_HEADER}: c3-s{i}".encode() in raw


async def test_unverified_sender_is_a_permanent_failure(moto_url: str) -> None:
    async with recording_provider(moto_url) as (provider, _):
        results = await provider.send_batch(
            [message(1, from_=Address("stranger@elsewhere.example")), message(2)]
        )
    assert results[1].ok
    rejected = results[0]
    assert not rejected.ok and not rejected.transient
    assert "MessageRejected" in (rejected.error or "") and "stranger@elsewhere.example" in (
        rejected.error or ""
    )


@contextmanager
def signatures_enforced(url: str, admin_calls: int) -> Iterator[None]:
    # moto checks credentials and SigV4 signatures after its first `admin_calls` requests.
    httpx.post(f"{url}/moto-api/reset-auth", content=str(admin_calls).encode()).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf").raise_for_status()


async def test_signature_is_valid_and_bad_credentials_are_transient(moto_url: str) -> None:
    kwargs: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    with signatures_enforced(moto_url, admin_calls=3):
        iam = boto3.client("iam", **kwargs)
        iam.create_user(UserName="mailer")
        iam.put_user_policy(
            UserName="mailer",
            PolicyName="send",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "ses:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="mailer")["AccessKey"]
        good = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        async with recording_provider(moto_url, credentials=good) as (provider, _):
            accepted = await provider.send_batch([message(5)])
        bad = Credentials(key["AccessKeyId"], "not-the-secret")
        async with recording_provider(moto_url, credentials=bad) as (provider, _):
            refused = await provider.send_batch([message(6)])
    assert accepted[0].ok, accepted[0].error
    assert not refused[0].ok and refused[0].transient
    assert "403" in (refused[0].error or "") and "SignatureDoesNotMatch" in (refused[0].error or "")


@asynccontextmanager
async def canned_http(status: int, headers: dict[str, str], body: bytes) -> AsyncIterator[str]:
    """A local HTTP/1.1 server answering every request with one fixed response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("status", "error_type", "headers", "transient", "retry_after"),
    [
        (429, "TooManyRequestsException", {"Retry-After": "7"}, True, 7.0),
        (500, "InternalFailure", {}, True, None),
        (503, "ServiceUnavailable", {}, True, None),
        (400, "SendingPausedException", {}, True, None),
        (400, "LimitExceededException", {}, True, None),
        (400, "MessageRejected", {}, False, None),
        (400, "BadRequestException", {}, False, None),
    ],
)
async def test_error_classification(
    status: int, error_type: str, headers: dict[str, str], transient: bool, retry_after: float | None
) -> None:
    body = json.dumps({"message": f"{error_type} happened"}).encode()
    headers = {
        "Content-Type": "application/json",
        "x-amzn-ErrorType": f"{error_type}:http://internal/",
        **headers,
    }
    async with canned_http(status, headers, body) as url, recording_provider(url) as (provider, _):
        (result,) = await provider.send_batch([message(1)])
    assert not result.ok
    assert result.transient is transient
    assert result.retry_after == retry_after
    assert result.error == f"SES {status} {error_type}: {error_type} happened"


async def test_unreachable_endpoint_is_transient() -> None:
    async with canned_http(200, {}, b"") as url:
        pass  # the port is closed again
    async with recording_provider(url) as (provider, _):
        results = await provider.send_batch([message(1), message(2)])
    assert all(not r.ok and r.transient and "SES request failed" in (r.error or "") for r in results)


async def test_built_from_settings(moto_url: str) -> None:
    provider = build_provider(
        Settings(
            provider="ses",
            ses_access_key_id="AKIDEXAMPLE",
            ses_secret_access_key="secret",
            ses_endpoint_url=moto_url,
        )
    )
    try:
        results = await provider.send_batch([message(9), message(10)])
    finally:
        await provider.close()
    assert all(r.ok for r in results)
    assert {r.provider_message_id for r in results} <= set(moto_raw_messages(moto_url))


async def test_commit_hook_runs_before_any_request(moto_url: str) -> None:
    seen: list[tuple[list[str], int]] = []
    async with recording_provider(moto_url) as (provider, requests):

        async def on_commit(ids: Sequence[str]) -> None:
            seen.append((list(ids), len(requests)))

        results = await provider.send_batch(
            [message(20), message(21, to=Address("jörg@example.org"))], on_commit=on_commit
        )

        async def refuse(ids: Sequence[str]) -> None:
            raise RuntimeError("ledger unavailable")

        with pytest.raises(RuntimeError, match="ledger unavailable"):
            await provider.send_batch([message(22)], on_commit=refuse)
        assert len(requests) == 1
    assert results[0].ok and not results[1].ok and not results[1].transient
    assert seen == [(["c3-s20"], 0)]


async def test_each_message_is_committed_right_before_its_own_request(moto_url: str) -> None:
    log = HandoverLog()

    async def record(request: httpx.Request) -> None:
        tags = json.loads(request.content)["EmailTags"]
        log.request(t["Value"] for t in tags if t["Name"] == DELIVERY_TAG)

    messages = [message(i, to=Address(f"each{i}@example.org")) for i in range(40)]
    client = httpx.AsyncClient(event_hooks={"request": [record]})
    provider = SesProvider(
        region=REGION,
        credentials=Credentials("AKIDEXAMPLE", "secret"),
        endpoint_url=moto_url,
        client=client,
        concurrency=5,
    )
    try:
        results = await provider.send_batch(messages, on_commit=log.on_commit, on_result=log.on_result)
    finally:
        await provider.close()
        await client.aclose()
    assert all(r.ok for r in results), [r.error for r in results]
    # At most one message per request slot is ever committed without its result recorded.
    log.check(all_ids={m.delivery_id for m in messages}, most_in_doubt=5)
    requests = [ids for kind, ids in log.events if kind == "request"]
    assert len(requests) == 40 and all(len(ids) == 1 for ids in requests)
