"""``GET /metrics``: the Prometheus scrape, on the API and on ``emailkit worker --metrics-port``.

An operator route, so closed by default: with ``EMAILKIT_METRICS_TOKEN`` set, it wants
``Authorization: Bearer <token>`` from everybody (compared in constant time; 401 otherwise). Without a token it
answers loopback clients only (403 for the rest): a scraper on the same host, or a sidecar, works with nothing to
set, and nothing is exposed to the network until a token is chosen. Behind a proxy the client is the one
EMAILKIT_TRUSTED_PROXIES names, so a request relayed from outside is refused like a direct one.

The figures are counts and timings by bounded labels (``emailkit.metrics.families``): no address, no id.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from emailkit.metrics import process, record
from emailkit.web.auth import bearer_token

log = logging.getLogger(__name__)

PATH = "/metrics"


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_endpoint(token: str | None) -> Callable[[Request], Awaitable[Response]]:
    expected = token.encode() if token else None

    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = bearer_token(request.headers.get("authorization")) or ""
            if not hmac.compare_digest(given.encode(), expected):
                return PlainTextResponse(
                    "a bearer token (EMAILKIT_METRICS_TOKEN) is required",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        elif not _loopback(request.client.host if request.client else None):
            return PlainTextResponse(
                "metrics are served to loopback clients only; set EMAILKIT_METRICS_TOKEN to scrape from elsewhere",
                status_code=403,
            )
        # Reading every process's file is blocking I/O: off the event loop.
        body, content_type = await asyncio.to_thread(process.exposition, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return metrics


def metrics_route(token: str | None) -> Route:
    return Route(PATH, metrics_endpoint(token), methods=["GET"])


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpMetricsMiddleware:
    """Times each HTTP request by its route template (set by the router on the scope), counts 4xx and 5xx.

    Requests no route matched are counted under ``unmatched``, so a scan of random paths adds no series."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            record.http_request(template, scope["method"], status, time.perf_counter() - started)


class MetricsServer:
    """``emailkit worker --metrics-port``: ``GET /metrics`` on a port of its own, served from a thread of the
    process that supervises the workers (whose figures it reads from their shared directory)."""

    def __init__(self, sock: socket.socket, token: str | None) -> None:
        import uvicorn

        app = Starlette(routes=[metrics_route(token)])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="emailkit-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{PATH}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
