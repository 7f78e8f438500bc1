"""Liveness and readiness probes (unauthenticated, reveal nothing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from emailkit.domain.runtime import Runtime

Handler = Callable[[Request], Awaitable[JSONResponse]]


def health_routes(runtime: Runtime) -> tuple[Handler, Handler]:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        if await runtime.db.ping():
            return JSONResponse({"status": "ready", "database": "ok"})
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)

    return healthz, readyz
