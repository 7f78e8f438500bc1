"""create_app(settings) -> Starlette: the composition root of the HTTP process."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from emailkit.db.engine import Database
from emailkit.domain.ports.dkim import DkimKeyring
from emailkit.domain.ports.queue import JobQueue, PubSub
from emailkit.domain.runtime import Runtime, SendingSetup
from emailkit.domain.sending_domains.keyring import SendingDomainKeyring
from emailkit.domain.webhooks_out.delivery import DeliveryConfig, WebhookSetup
from emailkit.inbound.sender_mailboxes import SenderMailboxes
from emailkit.providers.registry import build_provider
from emailkit.providers.senders import SenderProviderFactory
from emailkit.schema import SchemaLimits, build_schema
from emailkit.settings import Settings, configure_logging, load_settings
from emailkit.tasks.broker.queue import build_job_queue
from emailkit.tasks.pubsub import build_pubsub
from emailkit.tasks.ratelimit import build_rate_limiter, sender_limiter_factory
from emailkit.tasks.worker import close_runtime, embedded_worker
from emailkit.web.admission import AdmissionControl, AdmissionGate
from emailkit.web.archive import archive_routes
from emailkit.web.bodylimit import BodyLimitMiddleware, BodyLimits
from emailkit.web.console import console_routes
from emailkit.web.events import events_route
from emailkit.web.export import export_routes
from emailkit.web.graphql import GraphQLView
from emailkit.web.health import health_routes
from emailkit.web.metrics import HttpMetricsMiddleware, metrics_route
from emailkit.web.persisted import PersistedQueries
from emailkit.web.proxy import ProxyHeadersMiddleware, TrustedProxies
from emailkit.web.public import public_routes
from emailkit.web.ratelimit import ApiRateLimiter
from emailkit.web.requestcontext import RequestContextMiddleware
from emailkit.web.tracking import TrackingMiddleware, build_tracking
from emailkit.web.uploads import PREFLIGHT_HEADERS, UploadGuard
from emailkit.web.webhooks import build_webhooks
from emailkit.web.workspace import HEADER as WORKSPACE_HEADER
from emailkit.web.workspace import OutsideAnyWorkspace

log = logging.getLogger("emailkit")


def build_runtime(
    settings: Settings,
    db: Database | None = None,
    *,
    jobs: JobQueue | None = None,
    pubsub: PubSub | None = None,
) -> Runtime:
    """The Runtime of an API or worker process (workers pass their broker's queue, embedded ones the
    API's pub/sub)."""
    runs_jobs = jobs is not None
    db = db or Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_timeout=settings.database_pool_timeout,
        statement_timeout=settings.worker_statement_timeout if runs_jobs else settings.statement_timeout,
    )
    secret_key = settings.resolved_secret_key()
    keyring = SendingDomainKeyring(db, secret_key)
    return Runtime(
        db=db,
        secret_key=secret_key,
        public_url=settings.public_url,
        max_page_size=settings.max_page_size,
        exact_count_limit=settings.exact_count_limit,
        debug=settings.debug,
        jobs=jobs or build_job_queue(settings),
        pubsub=pubsub or build_pubsub(settings),
        sending=sending_setup(settings, keyring=keyring),
        sender_factory=SenderProviderFactory(outbox_root=settings.outbox_dir, keyring=keyring),
        sender_mailboxes=SenderMailboxes(),
        sender_allow_private=settings.sender_allow_private,
        webhooks=WebhookSetup(DeliveryConfig(allow_private=settings.webhook_allow_private)),
        flows=settings.flow_config(),
        domains=settings.domain_config(),
        keyring=keyring,
    )


def sending_setup(settings: Settings, *, keyring: DkimKeyring | None = None) -> SendingSetup:
    """How the process sends; ``keyring`` signs each message with its From domain's key (see
    ``emailkit.providers.dkim_keys``)."""
    return SendingSetup(
        provider_name=settings.provider,
        provider_factory=lambda: build_provider(settings, keyring=keyring),
        limiter_factory=lambda: build_rate_limiter(settings),
        config=settings.sending_config(),
        default_from=(settings.from_email, settings.from_name),
        sender_limiter=sender_limiter_factory(settings),
        default_rate_per_second=settings.send_rate_per_second,
    )


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    runtime = runtime or build_runtime(settings)
    schema = build_schema(
        SchemaLimits(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_query_tokens,
            max_cost=settings.query_cost_limit,
            max_page_size=settings.max_page_size,
            debug=settings.debug,
        )
    )
    api_limiter = ApiRateLimiter.from_settings(settings)
    graphql = GraphQLView(
        runtime,
        schema=schema,
        graphql_ide="graphiql",
        allowed_origins=settings.cors_origins,
        # File uploads (CSV imports): bounded by EMAILKIT_MAX_UPLOAD_BYTES (BodyLimitMiddleware); UploadGuard
        # below requires a preflight header.
        multipart_uploads_enabled=True,
        key_recheck_seconds=settings.ws_key_recheck_seconds,
        key_cache_seconds=settings.api_key_cache_seconds,
        api_limiter=api_limiter,
        persisted_queries=PersistedQueries(),
    )
    # Each executing request has a pool connection of its own; the rest wait their turn here, not in the pool.
    admission = AdmissionGate(settings.database_pool_size, max_wait=settings.api_queue_timeout)
    healthz, readyz = health_routes(runtime)
    tracking = build_tracking(
        runtime,
        anonymous=settings.tracking_anonymous,
        max_pending=settings.tracking_buffer_limit,
        flush_interval=settings.tracking_flush_seconds,
    )
    webhooks = build_webhooks(settings, runtime)
    static_dir = Path(str(resources.files("emailkit.web") / "static"))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # In-process queue: this process runs the jobs too.
        worker = embedded_worker(settings, runtime, build_runtime)
        if worker is not None:
            worker.start()
        tracking.start()
        # Everything built so far (schema, templates, SQLAlchemy metadata) lives as long as the process: out
        # of the collector's sight, full collections stop re-scanning it (they stalled requests by tens of ms).
        gc.freeze()
        try:
            yield
        finally:
            # Before the database closes: buffered opens and clicks are written, none lost.
            await tracking.stop()
            await webhooks.aclose()
            if worker is not None:
                await worker.stop()
            await close_runtime(runtime)

    middleware = [
        # First the client's real address, for everything after (the /subscribe limit, recorded hits).
        Middleware(ProxyHeadersMiddleware, proxies=TrustedProxies(settings.trusted_proxies)),
        # Every body is bounded before any route reads it.
        Middleware(
            BodyLimitMiddleware,
            limits=BodyLimits(graphql=settings.max_request_bytes, upload=settings.max_upload_bytes),
        ),
        # The open pixel and click redirect then skip routing and the other middleware (hot path).
        Middleware(TrackingMiddleware, handler=tracking.handler),
        # Request time and errors by route template; tracking hits, answered above, are counted by kind instead.
        Middleware(HttpMetricsMiddleware),
        # A request id (and a trace span) for everything else; tracking hits skip it as they skip the rest.
        Middleware(RequestContextMiddleware),
        # Every other route starts outside any workspace (tracking hits only queue, and touch no table).
        Middleware(OutsideAnyWorkspace),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    WORKSPACE_HEADER,
                    *(h.decode() for h in PREFLIGHT_HEADERS),
                ],
            )
        )

    # Route + WebSocketRoute rather than Mount: a Mount redirects POST /graphql and breaks WebSockets.
    routes = [
        Route("/graphql", AdmissionControl(UploadGuard(graphql), admission), methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        # Authenticated as /graphql (the same keys, cache and rate limit) and admitted through the same gate.
        events_route(runtime, graphql.auth, admission),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        metrics_route(settings.metrics_token.get_secret_value() if settings.metrics_token else None),
        *tracking.routes,
        *webhooks.routes,
        *export_routes(runtime, api_limiter),
        *public_routes(settings, runtime),
        *archive_routes(runtime),
        *console_routes(static_dir),
        Mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.admission = admission
    app.state.tracking = tracking
    app.state.webhooks = webhooks
    return app


def app_from_environment() -> Starlette:
    """The app of one API process when `emailkit serve --workers N` runs several (settings from the
    environment, as the parent read them)."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
