"""``ses``: Amazon SES v2 ``SendEmail`` with raw MIME content, over httpx, signed with botocore's SigV4.

Each message is one request (its content is personal), sent with bounded concurrency. The delivery id and
the message's metadata travel as EmailTags, so SES event notifications name the delivery they are about.

Why not batched like SendGrid and Mailgun: SES's only multi-recipient call, ``SendBulkEmail``, composes every
message from an email template (a stored one, created beforehand with ``CreateEmailTemplate``), rendered by
SES's own ``{{ }}`` substitution, for at most 50 destinations per call. It never takes raw MIME, so the message
we build (its MIME structure and encodings, our Message-ID, our headers) would become SES's rendering of a
template, which cannot be made byte-identical to what this path sends, and any ``{{`` in a campaign's text
would be read as template syntax; and keeping a stored template per campaign content in step with edits is
state on the provider's side that a crash can leave behind. So every message stays one ``SendEmail``.

Exactly once: a message is committed as handed over (``on_commit``) only once it holds one of the
``concurrency`` request slots, right before its request goes out, and its result is reported
(``on_result``) before the slot is given up. A worker killed at any moment therefore leaves at most
``concurrency`` messages in doubt: the requests in flight. Commits of requests that become ready together
are coalesced into one.

Error classification beyond the generic HTTP rule: SES answers account-level problems (sending paused,
daily quota exhausted, unverified MAIL FROM domain, unknown configuration set, rejected credentials:
401/403) with 4xx codes, but they say nothing about the recipient and clear up once the account is fixed,
so they count as transient: the campaign's error budget pauses it with the reason instead of failing
every recipient for good. MessageRejected and other request errors are permanent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import get_session

from emailkit.domain.ports.provider import (
    DELIVERY_TAG,
    CommitHook,
    OutgoingMessage,
    ProbeResult,
    ResultHook,
    SenderConfigError,
    SendResult,
    http_status_is_transient,
)
from emailkit.domain.sending.coalesce import Coalescer
from emailkit.providers.mime import MimeBuilder, MimeError, ascii_email
from emailkit.providers.sender_config import http_url, refuse_unknown, required_text, text

_TAG_INVALID = re.compile(r"[^A-Za-z0-9_-]")
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_XML_MAX_24H = re.compile(r"<Max24HourSend>([^<]*)</Max24HourSend>")
_XML_SENT_24H = re.compile(r"<SentLast24Hours>([^<]*)</SentLast24Hours>")
_ACCOUNT_LEVEL_ERRORS = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "LimitExceededException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",
        "TooManyRequestsException",
        "ThrottlingException",
    }
)


def _tag(value: str) -> str:
    """SES tag names and values allow only ASCII letters, digits, '_' and '-', at most 256 characters."""
    return _TAG_INVALID.sub("_", value)[:256] or "_"


def _error_details(response: httpx.Response) -> tuple[str, str]:
    """(error type, message) from a JSON error, the x-amzn-ErrorType header, or an XML ErrorResponse."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = response.headers.get("x-amzn-errortype") or str(body.get("__type") or body.get("code") or "")
        message = str(body.get("message") or body.get("Message") or "")
    else:
        code = _XML_CODE.search(response.text)
        text = _XML_MESSAGE.search(response.text)
        raw = response.headers.get("x-amzn-errortype") or (code.group(1) if code else "")
        message = text.group(1) if text else response.text[:300]
    # "MessageRejected:http://internal.amazon.com/..." or "com.amazonaws...#MessageRejected"
    return raw.split(":", 1)[0].rsplit("#", 1)[-1], message.strip()


class SesProvider:
    max_batch_size = 200

    def __init__(
        self,
        *,
        region: str,
        credentials: Credentials | None = None,
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        concurrency: int = 10,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        builder: MimeBuilder | None = None,
    ) -> None:
        self.region = region
        base = (endpoint_url or f"https://email.{region}.amazonaws.com").rstrip("/")
        self.url = f"{base}/v2/email/outbound-emails"
        self.probe_url = f"{base}/"
        self._credentials = credentials
        self._configuration_set = configuration_set
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = client or httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=concurrency)
        )
        self._owns_client = client is None
        self._builder = builder or MimeBuilder()

    def _frozen_credentials(self) -> ReadOnlyCredentials:
        if self._credentials is None:
            # The default chain: AWS_* variables, shared config, container or instance role.
            self._credentials = get_session().get_credentials()
            if self._credentials is None:
                raise RuntimeError(
                    "no AWS credentials: set EMAILKIT_SES_ACCESS_KEY_ID and EMAILKIT_SES_SECRET_ACCESS_KEY "
                    "or provide a role"
                )
        # Refreshable (role) credentials rotate; freezing per request picks up the current ones.
        return self._credentials.get_frozen_credentials()

    def _request_body(self, message: OutgoingMessage, raw: bytes) -> bytes:
        tags = [{"Name": DELIVERY_TAG, "Value": message.delivery_id}]
        tags += [{"Name": _tag(k), "Value": _tag(v)} for k, v in message.tags.items() if k != DELIVERY_TAG]
        payload: dict[str, Any] = {
            "FromEmailAddress": ascii_email(message.from_.email),
            "Destination": {"ToAddresses": [ascii_email(message.to.email)]},
            "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
            "EmailTags": tags,
        }
        if self._configuration_set:
            payload["ConfigurationSetName"] = self._configuration_set
        return json.dumps(payload, separators=(",", ":")).encode()

    def _signed_headers(self, body: bytes, credentials: ReadOnlyCredentials) -> dict[str, str]:
        request = AWSRequest(
            method="POST", url=self.url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(credentials, "ses", self.region).add_auth(request)
        return dict(request.headers.items())

    async def _post(
        self,
        message: OutgoingMessage,
        body: bytes,
        credentials: ReadOnlyCredentials,
        commits: Coalescer[str] | None,
        on_result: ResultHook | None,
    ) -> SendResult:
        async with self._semaphore:
            if commits is not None:
                await commits.submit([message.delivery_id])
            try:
                response = await self._client.post(
                    self.url, content=body, headers=self._signed_headers(body, credentials)
                )
            except httpx.TransportError as exc:
                result = SendResult.failed(
                    message.delivery_id, f"SES request failed: {type(exc).__name__}: {exc}", transient=True
                )
            else:
                result = self._result(message, response)
            if on_result is not None:
                await on_result([result])
        return result

    def _result(self, message: OutgoingMessage, response: httpx.Response) -> SendResult:
        if response.status_code == 200:
            try:
                message_id = response.json().get("MessageId")
            except (ValueError, AttributeError):
                message_id = None
            if message_id:
                return SendResult.sent(message.delivery_id, str(message_id))
        kind, detail = _error_details(response)
        transient = (
            http_status_is_transient(response.status_code)
            or response.status_code in (401, 403)
            or kind in _ACCOUNT_LEVEL_ERRORS
        )
        retry_after = _retry_after(response.headers.get("retry-after"))
        return SendResult.failed(
            message.delivery_id,
            f"SES {response.status_code} {kind or 'error'}: {detail}",
            transient=transient,
            retry_after=retry_after,
        )

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        bodies: dict[int, bytes] = {}
        for index, message in enumerate(messages):
            try:
                bodies[index] = self._request_body(message, self._builder.build(message).data)
            except MimeError as exc:
                results[index] = SendResult.failed(message.delivery_id, str(exc), transient=False)
        if bodies:
            try:
                credentials = await asyncio.to_thread(self._frozen_credentials)
            except RuntimeError as exc:
                for index in bodies:
                    results[index] = SendResult.failed(messages[index].delivery_id, str(exc), transient=True)
            else:
                commits = Coalescer(on_commit) if on_commit is not None else None
                try:
                    async with asyncio.TaskGroup() as group:
                        tasks = {
                            index: group.create_task(
                                self._post(messages[index], body, credentials, commits, on_result)
                            )
                            for index, body in bodies.items()
                        }
                except BaseExceptionGroup as group_error:
                    # The hook's own error (the pipeline expects LeaseLost as raised); the other requests
                    # were cancelled with it.
                    raise group_error.exceptions[0] from None
                results.update({index: task.result() for index, task in tasks.items()})
        return [results[index] for index in range(len(messages))]

    async def probe(self) -> ProbeResult:
        """GetSendQuota, signed: SES checks the key pair and the signature, sends nothing, and says the quota.

        The SES v1 query API on the same endpoint: the cheapest signed call there is (v2's GetAccount says the
        same, but moto, which the tests run against, does not serve it)."""
        try:
            credentials = await asyncio.to_thread(self._frozen_credentials)
        except RuntimeError as exc:
            return ProbeResult(False, str(exc))
        body = b"Action=GetSendQuota&Version=2010-12-01"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        request = AWSRequest(method="POST", url=self.probe_url, data=body, headers=headers)
        SigV4Auth(credentials, "ses", self.region).add_auth(request)
        try:
            response = await self._client.post(
                self.probe_url, content=body, headers=dict(request.headers.items())
            )
        except httpx.TransportError as exc:
            return ProbeResult(False, f"SES request failed: {type(exc).__name__}: {exc}")
        if response.status_code == 200:
            quota = _XML_MAX_24H.search(response.text)
            sent = _XML_SENT_24H.search(response.text)
            detail = (
                f"{sent.group(1) if sent else '?'} of {quota.group(1)} sent in the last 24 hours"
                if quota
                else "credentials accepted"
            )
            return ProbeResult(True, f"SES {response.status_code} in {self.region}: {detail}")
        kind, detail = _error_details(response)
        if kind in ("AccessDeniedException", "AccessDenied"):
            # Signed correctly by a real key, which may still be allowed to send (a send-only policy).
            return ProbeResult(True, f"SES {response.status_code} {kind}: credentials accepted; {detail}")
        return ProbeResult(False, f"SES {response.status_code} {kind or 'error'}: {detail}")

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def from_sender(
    settings: Mapping[str, Any], credentials: Mapping[str, str], *, pool_size: int
) -> SesProvider:
    """An SES sender: settings {region, endpointUrl?, configurationSet?}, credentials {accessKeyId,
    secretAccessKey}. The key pair is required: a workspace's sender never falls back to the instance's own AWS
    credentials (its role or environment)."""
    refuse_unknown(settings, ("region", "endpointUrl", "configurationSet"))
    refuse_unknown(credentials, ("accessKeyId", "secretAccessKey"))
    region = required_text(settings, "region")
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", region):
        raise SenderConfigError("region", f"not an AWS region name: {region!r}")
    endpoint_url = http_url(settings, "endpointUrl", f"https://email.{region}.amazonaws.com")
    key_id = required_text(credentials, "accessKeyId")
    secret = required_text(credentials, "secretAccessKey")
    return SesProvider(
        region=region,
        credentials=Credentials(key_id, secret),
        endpoint_url=endpoint_url,
        configuration_set=text(settings, "configurationSet"),
        concurrency=pool_size,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
