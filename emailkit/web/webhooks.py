"""``POST /webhooks/{provider}``: provider feedback in, verified, normalised and recorded.

Answers: 404 unknown provider; 413 body over the size limit; 401 bad, missing or unverifiable credentials
(also when verification is on and the provider has no credentials configured: an unauthenticated feedback
route would let anyone blocklist any address); 400 malformed body; 503 when a signing certificate cannot
be fetched right now; 200 otherwise, including for event types we do not record and for control messages,
so the provider does not retry them. Nothing is stored unless the answer is 200.

One provider account sends for every workspace, so the route has no workspace of its own: the recorder works
for all of them and stores each event in the workspace of the delivery it is about.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emailkit import traces
from emailkit.domain.feedback import FeedbackPolicy, record_events
from emailkit.domain.ports.webhooks import (
    SignatureInvalid,
    SubscriptionConfirmation,
    VerificationUnavailable,
    WebhookError,
    WebhookParser,
)
from emailkit.domain.runtime import Runtime
from emailkit.metrics import record as metrics
from emailkit.providers.webhooks import WebhookDeps, build_parsers, receive
from emailkit.settings import Settings
from emailkit.web.bodylimit import WEBHOOK_BYTES

log = logging.getLogger("emailkit.webhooks")

# An SNS signing certificate is a couple of kilobytes.
MAX_CERTIFICATE_BYTES = 64 * 1024
HTTP_TIMEOUT = 10.0


class BodyTooLarge(Exception):
    pass


class HttpGetter:
    """The outgoing GETs webhooks need (SNS certificates and subscription confirmations), through one
    lazily created httpx client. The URLs were already checked by the parsers (https, SNS host only)."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None = None, timeout: float = HTTP_TIMEOUT
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport, timeout=self.timeout, follow_redirects=False
            )
        return self._client

    async def fetch_certificate(self, url: str) -> bytes:
        async with self._http().stream("GET", url) as response:
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_CERTIFICATE_BYTES:
                    raise ValueError("certificate response too large")
                chunks.append(chunk)
        return b"".join(chunks)

    async def confirm(self, confirmation: SubscriptionConfirmation) -> None:
        response = await self._http().get(confirmation.subscribe_url)
        response.raise_for_status()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def feedback_policy(settings: Settings) -> FeedbackPolicy:
    return FeedbackPolicy(
        soft_bounce_limit=settings.soft_bounce_limit,
        soft_bounce_window=timedelta(days=settings.soft_bounce_window_days),
        complaint_pause_rate=settings.complaint_pause_rate,
        complaint_min_sample=settings.complaint_min_sample,
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@dataclass
class Webhooks:
    """The route and what it holds: parsers built once (certificate caches, replay memory), the recorder
    policy, and the HTTP client. ``clock`` and ``http`` can be swapped (tests freeze time, fake AWS)."""

    runtime: Runtime
    parsers: Mapping[str, WebhookParser]
    http: HttpGetter
    policy: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    # EMAILKIT_WEBHOOK_VERIFY: when on, a provider without configured credentials is refused.
    verify: bool = True
    # The edge middleware applies the same limit before this route runs; this one holds for a Webhooks used
    # on its own and for a lower per-instance limit.
    max_body_bytes: int = WEBHOOK_BYTES
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def routes(self) -> list[BaseRoute]:
        return [Route("/webhooks/{provider}", self.handle, methods=["POST"])]

    async def handle(self, request: Request) -> Response:
        name = request.path_params["provider"]
        parser = self.parsers.get(name)
        if parser is None:
            return _error(404, f"unknown provider {name!r}")
        with (
            structlog.contextvars.bound_contextvars(webhook=name),
            traces.span(f"webhook {name}", {"emailkit.provider": name}) as span,
        ):
            response = await self._handle(request, name, parser)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _handle(self, request: Request, name: str, parser: WebhookParser) -> Response:
        try:
            body = await read_body(request, self.max_body_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {self.max_body_bytes} bytes")
        try:
            if self.verify and not parser.authenticates:
                raise SignatureInvalid(f"no webhook credentials are configured for {name}")
            result = await receive(parser, request.headers, body, self.clock())
        except SignatureInvalid as exc:
            client = request.client.host if request.client else "?"
            log.warning("%s webhook from %s refused: %s", name, client, exc)
            metrics.webhook_signature_failure(name)
            return _error(exc.status_code, str(exc))
        except VerificationUnavailable as exc:
            log.warning("%s webhook could not be verified now: %s", name, exc)
            return _error(exc.status_code, str(exc))
        except WebhookError as exc:
            return _error(exc.status_code, str(exc))
        if result.confirmation is not None:
            return await self._confirm(name, result.confirmation)
        try:
            summary = await record_events(
                self.runtime.db, result.events, policy=self.policy, live=self.runtime.live
            )
        except Exception:
            # Answered with a 500, so the provider will retry: its retry must be accepted.
            await parser.not_stored(request.headers, body)
            raise
        # Per type, not per event: a request may carry a thousand.
        for kind, count in Counter(event.type.value for event in result.events).items():
            metrics.webhook_event(name, kind, count)
        return JSONResponse(
            {"received": summary.received, "stored": summary.stored, "duplicates": summary.duplicates}
        )

    async def _confirm(self, name: str, confirmation: SubscriptionConfirmation) -> Response:
        try:
            await self.http.confirm(confirmation)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "%s: confirming the SNS subscription to %s failed: %s", name, confirmation.topic_arn, exc
            )
            return _error(502, "could not confirm the subscription")
        log.info("%s: confirmed the SNS subscription to %s", name, confirmation.topic_arn)
        return JSONResponse({"confirmed": confirmation.topic_arn})

    async def aclose(self) -> None:
        await self.http.aclose()


def build_webhooks(settings: Settings, runtime: Runtime, http: HttpGetter | None = None) -> Webhooks:
    """Parsers are built once here: a configured key that cannot be used fails the start, not a request."""
    http = http or HttpGetter()
    parsers = build_parsers(settings, WebhookDeps(fetch_certificate=http.fetch_certificate))
    if not settings.webhook_verify:
        log.warning(
            "EMAILKIT_WEBHOOK_VERIFY=false: provider webhooks are accepted WITHOUT checking signatures; "
            "anyone can post bounces and complaints. Use this for local testing only."
        )
    else:
        unconfigured = sorted(n for n, p in parsers.items() if not p.authenticates)
        if unconfigured:
            log.info("webhooks without credentials (refused until configured): %s", ", ".join(unconfigured))
    return Webhooks(
        runtime=runtime,
        parsers=parsers,
        http=http,
        policy=feedback_policy(settings),
        verify=settings.webhook_verify,
    )
